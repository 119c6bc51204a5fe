# lunabase wire contract: ccsds.py (framing, CRC, telecommand MAC), defs.py (generated from
# dictionary.toml), cobs.py (serial framing).  Kept empty so MicroPython imports it cheaply.
