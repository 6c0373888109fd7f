"""Network namespaces: run code inside one (this thread only), make and remove named ones (the
`ip netns` kind, under /run/netns). Every netlink and BPF call acts in the calling thread's
namespace, so ``with inside(name):`` is how anything above core works in another one."""
from xdpkit._sys.netns import NETNS_RUN_DIR, create, current_id, exists, id_of, inside, list_namespaces, remove

__all__ = ["NETNS_RUN_DIR", "create", "current_id", "exists", "id_of", "inside", "list_namespaces", "remove"]
