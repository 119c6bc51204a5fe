# lunabase node firmware entry point (MicroPython; boards and the unix port).
#   board:     /main.py, /boot.py, /config.json, /lib/lunanode/..., /lib/wire/...
#   unix port: cd <node dir with config.json> &&
#              MICROPYPATH=.frozen:<repo>/firmware:<repo> micropython -X heapsize=100K <repo>/firmware/main.py
from lunanode import app

app.main()
