"""Key management: Secure Boot db key/cert and the verity/update signing key."""
