"""AF_XDP from Python: sockets with their UMEM, batched rings and a steering program."""
from xdpkit.afxdp.xsk import RxBatch, Steer, XskSocket, queues_of

__all__ = ["RxBatch", "Steer", "XskSocket", "queues_of"]
