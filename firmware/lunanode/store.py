# Small persistent files on the node's flash (littlefs on boards, the cwd on the unix
# port).  Every write goes to "<path>.tmp" first and is renamed over the old file: a
# rename is atomic on littlefs and POSIX, so a reset mid-write leaves the old value.
import os

DATA = "data"  # every file the firmware writes lives under this directory


def ensure_dir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists


def path(name):
    return DATA + "/" + name


def write_atomic(name, data):
    p = path(name)
    t = p + ".tmp"
    with open(t, "wb") as f:
        f.write(data)
    os.rename(t, p)


def read(name, default=None):
    try:
        with open(path(name), "rb") as f:
            return f.read()
    except OSError:
        return default


def read_int(name, default=0):
    b = read(name)
    if not b:
        return default
    try:
        return int(b)
    except ValueError:
        return default  # a corrupted value counts as absent


def write_int(name, value):
    write_atomic(name, str(value).encode())


def remove(name):
    try:
        os.remove(path(name))
    except OSError:
        pass


def exists(name):
    try:
        os.stat(path(name))
        return True
    except OSError:
        return False
