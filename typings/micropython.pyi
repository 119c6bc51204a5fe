# The one MicroPython builtin module the shared wire/ code imports (inside a try: CPython
# falls back to an identity const() of the same signature); the firmware's own checks
# use the full port stubs (firmware/pyrightconfig.*.json).
def const(x): ...
