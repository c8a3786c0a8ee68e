"""Analytics on tracks: line counts, windows, ground-plane measures."""
