"""Hardware-in-the-loop tooling: board control over serial, a virtual board, flashing, a UART gateway.

    from hil import Board, VirtualBoard
"""

from hil.board import Board, BoardInfo, ExpectTimeout
from hil.rawrepl import BoardError, ExecTimeout, RawReplError, RemoteError
from hil.virtual_board import VirtualBoard, VirtualBoardError

__all__ = [
    "Board",
    "BoardInfo",
    "BoardError",
    "ExecTimeout",
    "ExpectTimeout",
    "RawReplError",
    "RemoteError",
    "VirtualBoard",
    "VirtualBoardError",
]
