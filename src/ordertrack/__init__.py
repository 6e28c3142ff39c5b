"""ordertrack: real-time order tracking."""
