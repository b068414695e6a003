"""Hostile: writes its own reply on the worker's reply pipe: a .npy of dtype object, that is a pickle,
which would run os.mkdir($HOSTILE_BOMB) in whichever process unpickled it. The checker reads arrays
with allow_pickle=False, so it refuses the reply instead, and the folder is never made."""

import io
import json
import os
import struct
import sys

import numpy as np


class Bomb:
    def __reduce__(self):
        return os.mkdir, (os.environ["HOSTILE_BOMB"],)


def loss_and_grads(params, x, target, **kw):
    buffer = io.BytesIO()
    np.save(buffer, np.array([Bomb()], dtype=object), allow_pickle=True)
    blob = buffer.getvalue()
    head = json.dumps({"body": {"dict": [["ok", {"array": 0}]]}, "sizes": [len(blob)]}).encode()
    replies = int(sys.argv[-2])  # the worker's reply pipe, as its command line names it
    os.write(replies, struct.pack("<Q", len(head)) + head + blob)
    while True:  # the checker has what it asked for: it must not wait for more
        pass
