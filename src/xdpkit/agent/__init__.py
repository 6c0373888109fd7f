"""The node agent (``xdpkit agent``): one shared config directory turned into the same data plane
on every node of a fleet. The layer above the apps: it runs them, nothing imports it but cli."""
