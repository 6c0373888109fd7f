"""Typed codecs built from BTF: turn map keys and values into Python values and back.

A codec is built once from the BTF type graph and keeps no reference to libbpf, so it outlives
the BTF handle it came from. Ints decode to int, structs to :class:`Record` (a dict with
attribute access), byte arrays to ``bytes``, other arrays to lists.
"""
from __future__ import annotations

import json
import struct as _struct
import warnings
from dataclasses import dataclass, field

from xdpkit.errors import ConfigError

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD = 1, 2, 3, 4, 5, 6, 7
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_VAR, KIND_DATASEC, KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 14, 15, 16, 17, 18, 19
_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}


class Record(dict):
    """A decoded struct: a dict whose fields also read as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class Codec:
    size: int
    type_name: str = ""

    def decode(self, data: bytes):
        raise NotImplementedError

    def encode(self, value) -> bytes:
        raise NotImplementedError

    def parse(self, text: str):
        """Parse a command-line value into the Python value ``encode`` accepts."""
        if text.startswith("hex:"):
            return _parse_hex(text[4:], self.size)
        return self._parse(text)

    def _parse(self, text: str):
        return _parse_hex(text, self.size)

    def pack(self, value) -> bytes:
        """Encode, also accepting raw bytes of the right size."""
        if isinstance(value, (bytes, bytearray, memoryview)) and not isinstance(self, BytesCodec):
            raw = bytes(value)
            if len(raw) != self.size:
                raise ConfigError(f"expected {self.size} bytes, got {len(raw)}")
            return raw
        return self.encode(value)


def _parse_hex(text: str, size: int) -> bytes:
    cleaned = text.replace(":", "").replace(" ", "").removeprefix("0x")
    try:
        raw = bytes.fromhex(cleaned)
    except ValueError:
        raise ConfigError(f"not a hex byte string: {text!r}") from None
    if len(raw) != size:
        raise ConfigError(f"expected {size} bytes, got {len(raw)} in {text!r}")
    return raw


class BtfLayoutWarning(UserWarning):
    """A map's BTF type does not describe its keys or values (sizes differ): they are raw bytes."""


@dataclass
class BytesCodec(Codec):
    """Raw bytes. ``reason`` says why a map that has BTF still reads raw (empty: no BTF at all)."""

    size: int
    type_name: str = "bytes"
    reason: str = ""

    def decode(self, data: bytes):
        return bytes(data[: self.size])

    def encode(self, value) -> bytes:
        if isinstance(value, str):
            value = _parse_hex(value, self.size)
        if isinstance(value, int) and not isinstance(value, bool):
            # Untyped maps (no BTF) still take ints: native byte order, like the C side.
            return _int_bytes(value, self.size, signed=value < 0, what="value")
        try:
            if isinstance(value, dict):  # a struct for a map whose BTF did not fit: say why
                raise TypeError
            raw = bytes(value)
        except (TypeError, ValueError):
            why = f" ({self.reason})" if self.reason else " (the map has no BTF types)"
            raise ConfigError(f"expected {self.size} raw bytes{why}, got {value!r}") from None
        if len(raw) > self.size:
            raise ConfigError(f"expected at most {self.size} bytes, got {len(raw)}")
        return raw.ljust(self.size, b"\0")

    def _parse(self, text: str):
        try:
            return int(text, 0)
        except ValueError:
            return _parse_hex(text, self.size)


def _int_bytes(value: int, size: int, *, signed: bool, what: str) -> bytes:
    try:
        return int(value).to_bytes(size, "little", signed=signed)
    except OverflowError:
        kind = "signed" if signed else "unsigned"
        raise ConfigError(f"{what} {value} does not fit in a {size}-byte {kind} integer") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an integer, got {value!r}") from None


@dataclass
class IntCodec(Codec):
    size: int
    signed: bool = False
    is_bool: bool = False
    type_name: str = "int"

    def decode(self, data: bytes):
        v = int.from_bytes(data[: self.size], "little", signed=self.signed)
        return bool(v) if self.is_bool else v

    def encode(self, value) -> bytes:
        if isinstance(value, str):
            value = self._parse(value)
        return _int_bytes(value, self.size, signed=self.signed, what=self.type_name or "value")

    def _parse(self, text: str):
        try:
            return int(text, 0)
        except ValueError:
            raise ConfigError(f"{self.type_name or 'value'} must be an integer, got {text!r}") from None


@dataclass
class FloatCodec(Codec):
    size: int
    type_name: str = "float"

    def decode(self, data: bytes):
        return _struct.unpack("<d" if self.size == 8 else "<f", data[: self.size])[0]

    def encode(self, value) -> bytes:
        return _struct.pack("<d" if self.size == 8 else "<f", float(value))

    def _parse(self, text: str):
        return float(text)


@dataclass
class EnumCodec(IntCodec):
    names: dict[str, int] = field(default_factory=dict)

    def _parse(self, text: str):
        if text in self.names:
            return self.names[text]
        return super()._parse(text)


@dataclass
class ArrayCodec(Codec):
    elem: Codec
    count: int
    type_name: str = "array"

    @property
    def size(self) -> int:  # type: ignore[override]
        return self.elem.size * self.count

    def decode(self, data: bytes):
        if isinstance(self.elem, IntCodec) and self.elem.size == 1 and not self.elem.is_bool:
            return bytes(data[: self.size])
        n = self.elem.size
        return [self.elem.decode(data[i * n:(i + 1) * n]) for i in range(self.count)]

    def encode(self, value) -> bytes:
        if isinstance(value, str):
            value = self._parse(value)
        if isinstance(value, (bytes, bytearray)):
            if len(value) > self.size:
                raise ConfigError(f"expected at most {self.size} bytes, got {len(value)}")
            return bytes(value).ljust(self.size, b"\0")
        items = list(value)
        if len(items) > self.count:
            raise ConfigError(f"array holds {self.count} items, got {len(items)}")
        out = b"".join(self.elem.encode(v) for v in items)
        return out.ljust(self.size, b"\0")

    def _parse(self, text: str):
        if text.lstrip().startswith("["):
            return _json_value(text)
        return _parse_hex(text, self.size)


@dataclass
class Member:
    name: str
    bit_offset: int
    bit_size: int  # 0 for a whole (non-bitfield) member
    codec: Codec


@dataclass
class StructCodec(Codec):
    size: int
    members: list[Member]
    union: bool = False
    type_name: str = "struct"

    def decode(self, data: bytes):
        rec = Record()
        for m in self.members:
            if m.bit_size:
                whole = int.from_bytes(data[: self.size], "little")
                rec[m.name] = (whole >> m.bit_offset) & ((1 << m.bit_size) - 1)
            else:
                off = m.bit_offset // 8
                rec[m.name] = m.codec.decode(data[off: off + m.codec.size])
        return rec

    def encode(self, value) -> bytes:
        if isinstance(value, str):
            value = self._parse(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{self.type_name} value must be a mapping of field names, got {value!r}")
        known = {m.name for m in self.members}
        unknown = set(value) - known
        if unknown:
            raise ConfigError(f"unknown field(s) {sorted(unknown)} for {self.type_name}; "
                              f"fields are {sorted(known)}")
        buf = bytearray(self.size)
        for m in self.members:
            if m.name not in value:
                continue  # fields left out are zero
            if m.bit_size:
                v = int(value[m.name])
                if v < 0 or v >= (1 << m.bit_size):
                    raise ConfigError(f"field {m.name}={v} does not fit in {m.bit_size} bits")
                whole = int.from_bytes(buf, "little") | (v << m.bit_offset)
                buf[:] = whole.to_bytes(self.size, "little")
            else:
                off = m.bit_offset // 8
                try:
                    buf[off: off + m.codec.size] = m.codec.pack(value[m.name])
                except ConfigError as exc:
                    raise ConfigError(str(exc), field=m.name) from None
        return bytes(buf)

    def _parse(self, text: str):
        value = _json_value(text)
        if not isinstance(value, dict):
            raise ConfigError(f"{self.type_name} value must be a JSON object like "
                              f'{{"{self.members[0].name if self.members else "field"}": 1}}')
        return value


def _json_value(text: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"not valid JSON: {text!r} ({exc.msg})") from None


def to_jsonable(value):
    """Make a decoded value JSON-serialisable (bytes become hex strings)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (int, float, bool, str)) or value is None:
        return value
    return str(value)


def fit_codec(codec: Codec | None, size: int, what: str, map_name: str = "") -> Codec:
    """The codec for ``size``-byte keys or values (``what``): ``codec`` when its size matches.

    No codec (a map without BTF) is plain raw bytes. A codec of another size means the BTF does
    not describe this map's layout: the result is raw bytes that say why (``reason``), and a
    :class:`BtfLayoutWarning` is issued, so the mismatch is never silent.
    """
    if codec is None:
        return BytesCodec(size)
    if codec.size == size:
        return codec
    where = f"map '{map_name}': " if map_name else ""
    reason = (f"{where}BTF {what} type '{codec.type_name or '?'}' is {codec.size} bytes but the map's "
              f"{what}s are {size}; {what}s are raw bytes")
    warnings.warn(reason, BtfLayoutWarning, stacklevel=3)
    return BytesCodec(size, reason=reason)


class BtfReader:
    """Walks a libbpf ``struct btf`` and builds codecs."""

    def __init__(self, btf_ptr):
        from xdpkit._sys.libbpf import ffi, require

        self._lib = require()
        self._ffi = ffi
        self._btf = btf_ptr

    def _type(self, type_id: int):
        t = self._lib.btf__type_by_id(self._btf, type_id)
        if t == self._ffi.NULL:
            raise ConfigError(f"BTF type id {type_id} not found")
        return t

    def name(self, name_off: int) -> str:
        p = self._lib.btf__name_by_offset(self._btf, name_off)
        return self._ffi.string(p).decode() if p != self._ffi.NULL else ""

    @staticmethod
    def kind(t) -> int:
        return (t.info >> 24) & 0x1F

    @staticmethod
    def vlen(t) -> int:
        return t.info & 0xFFFF

    def resolve(self, type_id: int) -> int:
        while type_id:
            t = self._type(type_id)
            if self.kind(t) not in _MODIFIERS:
                return type_id
            type_id = t.size_or_type
        return 0

    def codec(self, type_id: int, size_hint: int | None = None) -> Codec:
        if not type_id:
            return BytesCodec(size_hint or 0)
        return self._build(type_id, depth=0)

    def _build(self, type_id: int, depth: int) -> Codec:
        if depth > 32:
            raise ConfigError("BTF type graph too deep")
        outer_name = self.name(self._type(type_id).name_off)
        type_id = self.resolve(type_id)
        t = self._type(type_id)
        kind = self.kind(t)
        name = self.name(t.name_off) or outer_name
        ffi = self._ffi
        if kind == KIND_INT:
            enc = ffi.cast("uint32_t *", t + 1)[0]
            bits = enc & 0xFF
            flags = (enc >> 24) & 0x0F
            if bits % 8 or bits == 0:
                return BytesCodec(t.size_or_type, type_name=name)
            return IntCodec(t.size_or_type, signed=bool(flags & 1), is_bool=bool(flags & 4),
                            type_name=name or "int")
        if kind in (KIND_ENUM, KIND_ENUM64):
            names = {}
            if kind == KIND_ENUM:
                vals = ffi.cast("struct btf_enum *", t + 1)
                for i in range(self.vlen(t)):
                    names[self.name(vals[i].name_off)] = vals[i].val
            else:
                vals64 = ffi.cast("struct btf_enum64 *", t + 1)
                for i in range(self.vlen(t)):
                    names[self.name(vals64[i].name_off)] = vals64[i].val_lo32 | (vals64[i].val_hi32 << 32)
            signed = bool(t.info >> 31)
            return EnumCodec(t.size_or_type, signed=signed, type_name=name or "enum", names=names)
        if kind == KIND_FLOAT:
            return FloatCodec(t.size_or_type, type_name=name)
        if kind == KIND_PTR:
            return IntCodec(8, type_name="pointer")
        if kind == KIND_ARRAY:
            arr = ffi.cast("struct btf_array *", t + 1)[0]
            return ArrayCodec(self._build(arr.type, depth + 1), arr.nelems, type_name=name or "array")
        if kind in (KIND_STRUCT, KIND_UNION):
            kflag = bool(t.info >> 31)
            members = []
            raw = ffi.cast("struct btf_member *", t + 1)
            for i in range(self.vlen(t)):
                m = raw[i]
                off, bits = (m.offset & 0xFFFFFF, m.offset >> 24) if kflag else (m.offset, 0)
                codec = self._build(m.type, depth + 1)
                if not bits and off % 8:
                    bits = codec.size * 8
                members.append(Member(self.name(m.name_off) or f"_anon{i}", off, bits, codec))
            return StructCodec(t.size_or_type, members, union=kind == KIND_UNION,
                               type_name=f"{'union' if kind == KIND_UNION else 'struct'} {name}".strip())
        if kind == KIND_DATASEC:
            return BytesCodec(t.size_or_type, type_name=name)
        return BytesCodec(0, type_name=name or f"BTF kind {kind}")

    def datasec_vars(self, section: str) -> dict[str, tuple[int, Codec]]:
        """Variables of a DATASEC (e.g. '.rodata'): name -> (offset, codec)."""
        type_id = self._lib.btf__find_by_name_kind(self._btf, section.encode(), KIND_DATASEC)
        if type_id < 0:
            return {}
        t = self._type(type_id)
        infos = self._ffi.cast("struct btf_var_secinfo *", t + 1)
        out = {}
        for i in range(self.vlen(t)):
            info = infos[i]
            var = self._type(info.type)
            if self.kind(var) != KIND_VAR:
                continue
            codec = self._build(var.size_or_type, 0)
            out[self.name(var.name_off)] = (info.offset, codec)
        return out
