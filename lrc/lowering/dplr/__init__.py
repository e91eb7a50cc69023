"""The chunked lowering for selective DPLR (delta-rule) transitions: see program.py."""
