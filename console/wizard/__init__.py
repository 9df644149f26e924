"""The first-boot setup wizard: the steps of seed 002 in order, saved as they are answered."""
