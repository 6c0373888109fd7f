"""The DDoS-mitigation firewall app: rules compiled to per-field class bitmaps at XDP."""
