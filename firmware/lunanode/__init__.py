# lunanode: the lunabase node firmware (MicroPython).  Module map: docs/firmware.md.
VERSION = "0.1.0"
