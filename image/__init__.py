"""Image builder: drives mkosi to build the signed A/B appliance image."""
