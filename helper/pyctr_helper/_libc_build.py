"""cffi declarations the helper needs (capability drop); built out-of-line at install time.

Only pyctr_helper/privileges.py imports the generated module pyctr_helper._libc.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("""
    int prctl(int option, unsigned long arg2, unsigned long arg3,
              unsigned long arg4, unsigned long arg5);
    int capset(void *hdrp, const void *datap);
    int capget(void *hdrp, void *datap);
""")
ffibuilder.set_source("pyctr_helper._libc", None)

if __name__ == "__main__":
    ffibuilder.compile()
