# The "uart" config section (link "uart", docs/firmware.md), validated by config.py with the
# same rules as every other section.  A module of its own so that only a UART node loads
# these names: qstrs, once interned, stay in RAM.
DEFAULTS = {
    "id": -1,  # -1: the board's default UART and pins (board/esp32.py, rp2.py)
    "baud": 115200,
    "tx": -1,
    "rx": -1,
    "path": "",  # unix port (sim board): tty path, or
    "fd": -1,  # an inherited file descriptor
    "max_frame": 1024,  # bytes of packets per frame, >= the largest packet
    "rx_max": 512,  # largest telecommand frame (decoded)
    "status_s": 10,  # status frame period (the gateway's liveness signal)
}

LIMITS = {
    "uart.baud": (300, 4000000),
    "uart.max_frame": (640, 16384),
    "uart.rx_max": (128, 4096),
    "uart.status_s": (1, 3600),
}
