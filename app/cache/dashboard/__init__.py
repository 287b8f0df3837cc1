"""What the cache dashboard shows: this process's counters and hit-ratio history, and the
directory of every app process sharing the cache (published in the cache itself)."""
