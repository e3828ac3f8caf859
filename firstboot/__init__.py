"""First-boot wizard: finds what the machine offers (disks, GPUs, memory encryption) and, in
later stages, creates or imports the encrypted data pool and stores its choices on the
persistent partition. Detection is read-only and safe to run at any time."""
