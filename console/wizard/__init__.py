"""The first-boot setup wizard: the setup steps in order, saved as they are answered."""
