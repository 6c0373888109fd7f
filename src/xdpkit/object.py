"""ObjectSpec (a parsed BPF ELF object, nothing in the kernel yet) and Object (loaded)."""
from __future__ import annotations

import errno as E
import os
import warnings
from pathlib import Path

from xdpkit._sys.libbpf import capture_messages, ffi, require
from xdpkit.btf import BtfReader, Codec
from xdpkit.compile import object_path
from xdpkit.errors import ConfigError, LoadError, NotFoundError, VerifierError, XdpkitError
from xdpkit.kernel import BPF_XDP_ATTACH_TYPE, MapInfo, MapType, ProgType, map_info
from xdpkit.maps import Map, make_map
from xdpkit.program import Program

#: Verifier log buffer per program. The kernel keeps the tail of longer logs.
VERIFIER_LOG_SIZE = 8 * 1024 * 1024


def _s(p) -> str:
    return ffi.string(p).decode() if p != ffi.NULL else ""


def _libbpf_detail(lines: list[tuple[int, str]]) -> str:
    """The most useful libbpf warning: the last one that is not a generic 'failed to load'."""
    warns = [t for lvl, t in lines if lvl == 0 and t]
    for text in reversed(warns):
        if "failed to load object" not in text and "-- BEGIN" not in text and "-- END" not in text:
            return text.removeprefix("libbpf: ")
    return warns[-1].removeprefix("libbpf: ") if warns else ""


class ProgramSpec:
    """A program in an object before load: its name, section and type; set ``autoload``."""

    def __init__(self, ptr, obj_spec: "ObjectSpec"):
        self._ptr = ptr
        self._spec = obj_spec
        self.name = _s(require().bpf_program__name(ptr))
        self.section = _s(require().bpf_program__section_name(ptr))

    @property
    def type(self) -> int:
        return require().bpf_program__type(self._ptr)

    @type.setter
    def type(self, prog_type: int) -> None:
        require().bpf_program__set_type(self._ptr, int(prog_type))

    @property
    def autoload(self) -> bool:
        return bool(require().bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        require().bpf_program__set_autoload(self._ptr, bool(value))

    @property
    def insn_count(self) -> int:
        return require().bpf_program__insn_cnt(self._ptr)

    def __repr__(self) -> str:
        return f"<ProgramSpec {self.name!r} section={self.section!r} type={ProgType.name_of(self.type)}>"


class MapSpec:
    """A map definition before load: type, sizes; ``max_entries`` may be changed."""

    def __init__(self, ptr):
        self._ptr = ptr
        lib = require()
        self.name = _s(lib.bpf_map__name(ptr))
        self.type = lib.bpf_map__type(ptr)
        self.key_size = lib.bpf_map__key_size(ptr)
        self.value_size = lib.bpf_map__value_size(ptr)
        self.internal = bool(lib.bpf_map__is_internal(ptr))

    @property
    def max_entries(self) -> int:
        return require().bpf_map__max_entries(self._ptr)

    @max_entries.setter
    def max_entries(self, n: int) -> None:
        require().bpf_map__set_max_entries(self._ptr, int(n))

    @property
    def pin_path(self) -> str | None:
        """Where libbpf pins (or reuses) this map at load: set by the object's `pinning`
        attribute (LIBBPF_PIN_BY_NAME -> /sys/fs/bpf/NAME). None: not pinned."""
        path = require().bpf_map__pin_path(self._ptr)
        return _s(path) or None

    @pin_path.setter
    def pin_path(self, path: str | None) -> None:
        ret = require().bpf_map__set_pin_path(self._ptr, os.fsencode(path) if path else ffi.NULL)
        if ret < 0:
            raise LoadError("bpf_map__set_pin_path", -ret, f"map {self.name}")

    def __repr__(self) -> str:
        return f"<MapSpec {self.name!r} type={MapType.name_of(self.type)} max_entries={self.max_entries}>"


class Rodata:
    """``const volatile`` globals of the object, settable by name before load."""

    def __init__(self, spec: "ObjectSpec"):
        self._spec = spec
        self._vars: dict[str, tuple[int, Codec]] = {}
        self._map = None
        btf = require().bpf_object__btf(spec._obj)
        if btf != ffi.NULL:
            self._vars = BtfReader(btf).datasec_vars(".rodata")
        for m in spec._map_ptrs():
            if _s(require().bpf_map__name(m)).endswith(".rodata"):
                self._map = m

    def names(self) -> list[str]:
        return sorted(self._vars)

    def __contains__(self, name: str) -> bool:
        return name in self._vars

    def _lookup(self, name: str) -> tuple[int, Codec]:
        if name not in self._vars or self._map is None:
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"no const volatile global named {name!r} in {self._spec.path.name} "
                                f"(known: {known})")
        return self._vars[name]

    def _image(self) -> bytearray:
        size = ffi.new("size_t *")
        data = require().bpf_map__initial_value(self._map, size)
        return bytearray(ffi.buffer(data, size[0]))

    def __getitem__(self, name: str):
        off, codec = self._lookup(name)
        return codec.decode(bytes(self._image()[off: off + codec.size]))

    def __setitem__(self, name: str, value) -> None:
        self._spec._check_open()
        off, codec = self._lookup(name)
        if isinstance(value, str):
            value = codec.parse(value)
        try:
            raw = codec.pack(value)
        except ConfigError as exc:
            raise ConfigError(str(exc), field=name) from None
        image = self._image()
        image[off: off + codec.size] = raw
        ret = require().bpf_map__set_initial_value(self._map, bytes(image), len(image))
        if ret < 0:
            raise LoadError("bpf_map__set_initial_value", -ret, f"setting {name}")


class ObjectSpec:
    """A BPF ELF object opened with libbpf: programs, maps and rodata to adjust before load.

    Nothing exists in the kernel until :meth:`load`, which is all-or-nothing.
    """

    def __init__(self, path: Path, obj_ptr):
        self.path = path
        self._obj = obj_ptr
        self._loaded = False
        self.programs: dict[str, ProgramSpec] = {}
        p = ffi.NULL
        lib = require()
        while True:
            p = lib.bpf_object__next_program(obj_ptr, p)
            if p == ffi.NULL:
                break
            ps = ProgramSpec(p, self)
            self.programs[ps.name] = ps
        self.maps: dict[str, MapSpec] = {ms.name: ms for ms in (MapSpec(m) for m in self._map_ptrs())}
        self.rodata = Rodata(self)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ObjectSpec":
        """Open a BPF object file, or compile a ``.c`` source first (cached)."""
        obj_file = object_path(path)
        lib = require()
        opts = ffi.new("struct bpf_object_open_opts *", {"sz": ffi.sizeof("struct bpf_object_open_opts")})
        with capture_messages() as msgs:
            obj = lib.bpf_object__open_file(os.fsencode(obj_file), opts)
        if obj == ffi.NULL:
            err = ffi.errno or E.EINVAL
            detail = _libbpf_detail(msgs)
            hint = None
            if "legacy map definitions" in detail:
                hint = "declare maps the BTF way: struct { __uint(type, ...); ... } name SEC(\".maps\");"
            raise LoadError("bpf_object__open", err, f"cannot open {path}" + (f": {detail}" if detail else ""),
                            hint=hint)
        return cls(Path(path), obj)

    def _map_ptrs(self):
        lib = require()
        m = ffi.NULL
        while True:
            m = lib.bpf_object__next_map(self._obj, m)
            if m == ffi.NULL:
                return
            yield m

    def _check_open(self):
        if self._obj is None:
            raise XdpkitError("this ObjectSpec is closed")
        if self._loaded:
            raise XdpkitError("this ObjectSpec was already loaded; open the file again to change it")

    def program_by_section(self, section: str) -> ProgramSpec:
        matches = [p for p in self.programs.values() if p.section == section]
        if not matches:
            known = ", ".join(sorted({p.section for p in self.programs.values()})) or "none"
            raise NotFoundError(f"no program in section {section!r} of {self.path.name} (sections: {known})")
        return matches[0]

    def select(self, *, section: str | None = None, program: str | None = None) -> ProgramSpec:
        """Pick one program by section or name (or the only/first XDP one) and load only it."""
        if section is not None and program is not None:
            raise ConfigError("give either a section or a program name, not both")
        if section is not None:
            chosen = self.program_by_section(section)
        elif program is not None:
            if program not in self.programs:
                known = ", ".join(sorted(self.programs)) or "none"
                raise NotFoundError(f"no program named {program!r} in {self.path.name} (programs: {known})")
            chosen = self.programs[program]
        else:
            if not self.programs:
                raise NotFoundError(f"{self.path.name} contains no BPF programs")
            xdp = [p for p in self.programs.values() if p.type in (ProgType.XDP, ProgType.UNSPEC)]
            chosen = (xdp or list(self.programs.values()))[0]
        for p in self.programs.values():
            p.autoload = p is chosen
        return chosen

    def load(self) -> "Object":
        """Create maps and load programs into the kernel. On failure nothing is left behind."""
        self._check_open()
        lib = require()
        logs = {}
        for p in self.programs.values():
            if p.type == ProgType.UNSPEC:
                # Tutorial-style custom sections (SEC("xdp_drop_udp")) are unknown to libbpf;
                # like `ip link ... xdp obj`, treat them as XDP.
                lib.bpf_program__set_type(p._ptr, ProgType.XDP)
                lib.bpf_program__set_expected_attach_type(p._ptr, BPF_XDP_ATTACH_TYPE)
            if p.autoload:
                buf = ffi.new("char[]", VERIFIER_LOG_SIZE)
                lib.bpf_program__set_log_buf(p._ptr, buf, VERIFIER_LOG_SIZE)
                logs[p.name] = buf
        with capture_messages() as msgs:
            ret = lib.bpf_object__load(self._obj)
        self._loaded = True
        if ret < 0:
            err = -ret
            failed = [(name, ffi.string(buf).decode(errors="replace")) for name, buf in logs.items()
                      if buf[0] != b"\0"]
            self.close()  # libbpf already unloaded what it created; free the rest
            if failed:
                name, log = failed[0]
                raise VerifierError(name, err, log)
            detail = _libbpf_detail(msgs)
            hint = None
            if err == E.EPERM:
                hint = "loading BPF programs needs root (CAP_BPF and CAP_NET_ADMIN)"
            raise LoadError("bpf_object__load", err, f"cannot load {self.path.name}" +
                            (f": {detail}" if detail else ""), hint=hint)
        obj, self._obj = self._obj, None
        return Object(self.path, obj, self.programs, self.maps)

    def close(self) -> None:
        obj, self._obj = self._obj, None
        if obj is not None:
            require().bpf_object__close(obj)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # ObjectSpec holds only user-space memory before load; freeing it here is safe.
        try:
            self.close()
        except Exception:
            pass


class Object:
    """A loaded BPF object: ``programs`` and ``maps`` by name. ``close()`` releases our fds.

    Closing does not detach: a program attached through netlink stays on its interface.
    """

    def __init__(self, path: Path, obj_ptr, program_specs: dict[str, ProgramSpec],
                 map_specs: dict[str, MapSpec]):
        self.path = path
        self._obj = obj_ptr
        lib = require()
        btf = lib.bpf_object__btf(obj_ptr)
        reader = BtfReader(btf) if btf != ffi.NULL else None
        self.programs: dict[str, Program] = {}
        for name, ps in program_specs.items():
            fd = lib.bpf_program__fd(ps._ptr)
            if fd >= 0:
                self.programs[name] = Program(fd, name=name, section=ps.section, owner=self)
        self.maps: dict[str, Map] = {}
        for m in ObjectSpec._map_ptrs(self):  # type: ignore[arg-type]
            fd = lib.bpf_map__fd(m)
            if fd < 0:
                continue
            info: MapInfo = map_info(fd)
            key = value = None
            if reader is not None:
                kid, vid = lib.bpf_map__btf_key_type_id(m), lib.bpf_map__btf_value_type_id(m)
                key = reader.codec(kid) if kid else None
                value = reader.codec(vid) if vid else None
            name = _s(lib.bpf_map__name(m))
            self.maps[name] = make_map(fd, info, key, value, owned=False)

    @classmethod
    def from_file(cls, path, **select) -> "Object":
        """Open, optionally select one program (section= or program=), and load."""
        spec = ObjectSpec.from_file(path)
        if select:
            spec.select(**select)
        return spec.load()

    @property
    def closed(self) -> bool:
        return self._obj is None

    def program(self, name: str | None = None) -> Program:
        if name is None:
            if len(self.programs) != 1:
                raise ConfigError(f"{self.path.name} has {len(self.programs)} programs; name one of "
                                  f"{sorted(self.programs)}")
            return next(iter(self.programs.values()))
        try:
            return self.programs[name]
        except KeyError:
            raise NotFoundError(f"no program {name!r} (programs: {sorted(self.programs)})") from None

    def close(self) -> None:
        """Release the object's fds (idempotent). Attached programs stay attached."""
        obj, self._obj = self._obj, None
        if obj is None:
            return
        for m in self.maps.values():
            m._invalidate()
        for p in self.programs.values():
            p._invalidate()
        require().bpf_object__close(obj)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_obj", None) is not None:
            warnings.warn(f"xdpkit Object {self.path.name} was not closed", ResourceWarning, stacklevel=2)
            self.close()
