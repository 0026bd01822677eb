"""Starts the Jupyter server with TCP_NODELAY on its kernel websockets.

jupyter_server leaves Nagle's algorithm on for them: the several small frames of one execution
(status, execute_input, result, execute_reply) then wait for the client's delayed ACK, ~40 ms
per execution.
"""

import sys

from jupyter_server.services.kernels.handlers import ZMQChannelsHandler

_open = ZMQChannelsHandler.open


def _open_nodelay(self, *args, **kwargs):
    self.set_nodelay(True)
    return _open(self, *args, **kwargs)


ZMQChannelsHandler.open = _open_nodelay

from jupyter_server.serverapp import main  # noqa: E402

sys.exit(main())
