"""Frontend backends behind one protocol (``base.Backend``)."""
