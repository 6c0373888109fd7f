"""cffi (ABI mode) bindings to the system libbpf.so.1.

Only this package touches cffi. Declarations follow libbpf 1.1 (Debian 12); every function
used here exists in libbpf >= 1.0. Functions return negative errno on failure (libbpf 1.0
semantics), pointers return NULL and set errno.
"""
from __future__ import annotations

import contextlib
import ctypes.util
import os
import threading

from cffi import FFI

ffi = FFI()
ffi.cdef(
    """
typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32; typedef uint64_t __u64;
typedef int32_t __s32;

struct bpf_object; struct bpf_program; struct bpf_map; struct bpf_link; struct btf;

struct bpf_object_open_opts { size_t sz; const char *object_name; bool relaxed_maps;
    const char *pin_root_path; __u32 stub_attach_prog_fd; const char *kconfig;
    const char *btf_custom_path; char *kernel_log_buf; size_t kernel_log_size;
    __u32 kernel_log_level; };

struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
struct btf *bpf_object__btf(const struct bpf_object *obj);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);

const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
bool bpf_program__autoload(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__type(const struct bpf_program *prog);
int bpf_program__set_type(struct bpf_program *prog, int type);
int bpf_program__expected_attach_type(const struct bpf_program *prog);
int bpf_program__set_expected_attach_type(struct bpf_program *prog, int type);
int bpf_program__set_log_level(struct bpf_program *prog, __u32 log_level);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);
int bpf_program__set_ifindex(struct bpf_program *prog, __u32 ifindex);
size_t bpf_program__insn_cnt(const struct bpf_program *prog);

const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
int bpf_map__type(const struct bpf_map *map);
__u32 bpf_map__key_size(const struct bpf_map *map);
__u32 bpf_map__value_size(const struct bpf_map *map);
__u32 bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
__u32 bpf_map__btf_key_type_id(const struct bpf_map *map);
__u32 bpf_map__btf_value_type_id(const struct bpf_map *map);
bool bpf_map__is_internal(const struct bpf_map *map);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
int bpf_map__set_pin_path(struct bpf_map *map, const char *path);
const char *bpf_map__pin_path(const struct bpf_map *map);
int bpf_map__set_ifindex(struct bpf_map *map, __u32 ifindex);

struct bpf_link *bpf_program__attach_xdp(const struct bpf_program *prog, int ifindex);
int bpf_link__fd(const struct bpf_link *link);
int bpf_link__pin(struct bpf_link *link, const char *path);
int bpf_link__unpin(struct bpf_link *link);
int bpf_link__detach(struct bpf_link *link);
int bpf_link__destroy(struct bpf_link *link);
void bpf_link__disconnect(struct bpf_link *link);
struct bpf_link *bpf_link__open(const char *path);

struct bpf_link_create_opts { size_t sz; __u32 flags; void *iter_info; __u32 iter_info_len;
    __u32 target_btf_id; __u64 u[4]; };
int bpf_link_create(int prog_fd, int target_fd, int attach_type, const struct bpf_link_create_opts *opts);
int bpf_link_get_fd_by_id(__u32 id);
struct bpf_link_info { __u32 type; __u32 id; __u32 prog_id; __u32 pad; __u32 u32s[16]; };
int bpf_link_detach(int link_fd);
int bpf_link_update(int link_fd, int new_prog_fd, const void *opts);

struct bpf_map_create_opts { size_t sz; __u32 btf_fd; __u32 btf_key_type_id;
    __u32 btf_value_type_id; __u32 btf_vmlinux_value_type_id; __u32 inner_map_fd; __u32 map_flags;
    __u64 map_extra; __u32 numa_node; __u32 map_ifindex; };
int bpf_map_create(int map_type, const char *map_name, __u32 key_size, __u32 value_size,
                   __u32 max_entries, const struct bpf_map_create_opts *opts);
int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);

struct bpf_map_batch_opts { size_t sz; __u64 elem_flags; __u64 flags; };
int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values,
                         __u32 *count, const struct bpf_map_batch_opts *opts);
int bpf_map_update_batch(int fd, const void *keys, const void *values, __u32 *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_map_delete_batch(int fd, const void *keys, __u32 *count,
                         const struct bpf_map_batch_opts *opts);

int bpf_obj_pin(int fd, const char *pathname);
int bpf_obj_get(const char *pathname);
int bpf_prog_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_map_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_link_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_prog_get_fd_by_id(__u32 id);
int bpf_map_get_fd_by_id(__u32 id);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len);

struct bpf_prog_bind_opts { size_t sz; __u32 flags; };
int bpf_prog_bind_map(int prog_fd, int map_fd, const struct bpf_prog_bind_opts *opts);

struct bpf_test_run_opts {
    size_t sz; const void *data_in; void *data_out; __u32 data_size_in; __u32 data_size_out;
    const void *ctx_in; void *ctx_out; __u32 ctx_size_in; __u32 ctx_size_out;
    __u32 retval; int repeat; __u32 duration; __u32 flags; __u32 cpu; __u32 batch_size;
};
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);

struct bpf_xdp_query_opts { size_t sz; __u32 prog_id; __u32 drv_prog_id; __u32 hw_prog_id;
    __u32 skb_prog_id; __u8 attach_mode; };
int bpf_xdp_query(int ifindex, int flags, struct bpf_xdp_query_opts *opts);

struct bpf_prog_info {
    __u32 type; __u32 id; __u8 tag[8]; __u32 jited_prog_len; __u32 xlated_prog_len;
    __u64 jited_prog_insns; __u64 xlated_prog_insns; __u64 load_time; __u32 created_by_uid;
    __u32 nr_map_ids; __u64 map_ids; char name[16]; __u32 ifindex; __u32 gpl_bits;
    __u64 netns_dev; __u64 netns_ino; __u32 nr_jited_ksyms; __u32 nr_jited_func_lens;
    __u64 jited_ksyms; __u64 jited_func_lens; __u32 btf_id; __u32 func_info_rec_size;
    __u64 func_info; __u32 nr_func_info; __u32 nr_line_info; __u64 line_info;
    __u64 jited_line_info; __u32 nr_jited_line_info; __u32 line_info_rec_size;
    __u32 jited_line_info_rec_size; __u32 nr_prog_tags; __u64 prog_tags; __u64 run_time_ns;
    __u64 run_cnt; __u64 recursion_misses; __u32 verified_insns; __u32 attach_btf_obj_id;
    __u32 attach_btf_id; __u32 pad;
};
struct bpf_map_info {
    __u32 type; __u32 id; __u32 key_size; __u32 value_size; __u32 max_entries; __u32 map_flags;
    char name[16]; __u32 ifindex; __u32 btf_vmlinux_value_type_id; __u64 netns_dev;
    __u64 netns_ino; __u32 btf_id; __u32 btf_key_type_id; __u32 btf_value_type_id; __u32 pad;
    __u64 map_extra;
};

struct btf_type { __u32 name_off; __u32 info; __u32 size_or_type; };
struct btf_member { __u32 name_off; __u32 type; __u32 offset; };
struct btf_array { __u32 type; __u32 index_type; __u32 nelems; };
struct btf_enum { __u32 name_off; __s32 val; };
struct btf_enum64 { __u32 name_off; __u32 val_lo32; __u32 val_hi32; };
struct btf_var_secinfo { __u32 type; __u32 offset; __u32 size; };

const struct btf_type *btf__type_by_id(const struct btf *btf, __u32 id);
const char *btf__name_by_offset(const struct btf *btf, __u32 offset);
__u32 btf__type_cnt(const struct btf *btf);
int btf__find_by_name_kind(const struct btf *btf, const char *type_name, __u32 kind);
struct btf *btf__load_from_kernel_by_id(__u32 id);
void btf__free(struct btf *btf);

/* observability: tp_btf attach (name NULL for tracing programs), kernel BPF run-time stats */
int bpf_raw_tracepoint_open(const char *name, int prog_fd);
int bpf_enable_stats(int type);
struct btf *btf__load_vmlinux_btf(void);
int libbpf_probe_bpf_prog_type(int prog_type, const void *opts);
int libbpf_num_possible_cpus(void);
int libbpf_major_version(void);
int libbpf_minor_version(void);
int bpf_prog_load(int prog_type, const char *prog_name, const char *license, const void *insns,
                  size_t insn_cnt, const void *opts);
int libbpf_strerror(int err, char *buf, size_t size);
typedef int (*libbpf_print_fn_t)(int level, const char *fmt, void *ap);
libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn);
int vsnprintf(char *str, size_t size, const char *format, void *ap);

int close(int fd);
int setns(int fd, int nstype);
"""
)


def _open_libbpf():
    names = ["libbpf.so.1"]
    found = ctypes.util.find_library("bpf")
    if found:
        names.append(found)
    errors = []
    for name in names:
        try:
            return ffi.dlopen(name)
        except OSError as exc:  # try the next candidate
            errors.append(str(exc))
    return None, "; ".join(errors)


_lib = _open_libbpf()
if isinstance(_lib, tuple):
    lib = None
    load_error = _lib[1]
else:
    lib = _lib
    load_error = None

libc = ffi.dlopen(None)

# libbpf prints warnings to stderr by default. xdpkit collects them instead (per thread) so
# that errors can quote libbpf's own explanation. va_list is passed as a pointer on the ABIs
# we run on (x86_64: array type; aarch64: large struct passed by reference).
_captured = threading.local()


@ffi.callback("int(int, const char *, void *)")
def _print_cb(level, fmt, ap):
    buf = ffi.new("char[1024]")
    libc.vsnprintf(buf, 1024, fmt, ap)
    lines = getattr(_captured, "lines", None)
    if lines is not None:
        lines.append((level, ffi.string(buf).decode(errors="replace").rstrip()))
    return 0


if lib is not None:
    lib.libbpf_set_print(_print_cb)


@contextlib.contextmanager
def capture_messages():
    """Collect libbpf's messages (level, text) emitted by this thread inside the block."""
    prev = getattr(_captured, "lines", None)
    lines: list[tuple[int, str]] = []
    _captured.lines = lines
    try:
        yield lines
    finally:
        _captured.lines = prev


def require():
    """Return the libbpf handle or raise a clear error when libbpf.so.1 is missing."""
    if lib is None:
        from xdpkit.errors import NotSupportedError

        raise NotSupportedError(
            "libbpf.so.1", hint="install it: apt-get install libbpf1 (" + str(load_error) + ")"
        )
    return lib


def errno_of(ret: int) -> int:
    """libbpf returns -errno; pointer-returning calls leave errno set."""
    if ret < 0:
        return -ret
    return ffi.errno or 0


def close_fd(fd: int) -> None:
    if fd is not None and fd >= 0:
        os.close(fd)
