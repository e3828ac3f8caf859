"""Signed A/B updates of the appliance: publish a build, verify and stage an update, hand it to
systemd-sysupdate, report and roll back (issue #9). See docs/updates.md."""
