"""The L4 load balancer app."""
