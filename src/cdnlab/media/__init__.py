"""Media formats shared by the edge and the control plane (fragmented MP4, DASH MPD); imports
neither ``edge`` nor ``control``."""
