"""locustfiles, one per scenario; ``shop_day`` mixes the others."""
