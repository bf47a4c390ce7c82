"""cffi declarations for the syscalls Python 3.11 lacks; built out-of-line at install time.

Only pyctr/syscalls.py imports the generated module pyctr._libc.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("""
    int unshare(int flags);
    int setns(int fd, int nstype);
    int mount(const char *source, const char *target, const char *fstype,
              unsigned long flags, const void *data);
    int umount2(const char *target, int flags);
    int prctl(int option, unsigned long arg2, unsigned long arg3,
              unsigned long arg4, unsigned long arg5);
    long syscall(long number, ...);
    int sethostname(const char *name, size_t len);
    int capset(void *hdrp, const void *datap);
    int capget(void *hdrp, void *datap);
""")
ffibuilder.set_source("pyctr._libc", None)

if __name__ == "__main__":
    ffibuilder.compile()
    # An editable install runs this script in place (scripts/install-host.sh --editable):
    # byte-compile the package too. Users cannot write __pycache__ in the root-owned tree, so
    # without this every `pyctr run` would recompile every module it imports (~20 ms of a
    # ~35 ms start). A regular pip install byte-compiles by itself.
    import compileall
    import os

    compileall.compile_dir(os.path.dirname(os.path.abspath(__file__)), quiet=1)
