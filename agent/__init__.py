"""The on-box agent: validate infra.yml and reconcile it into Incus and nftables."""
