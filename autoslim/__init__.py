"""autoslim: AutoSlim channel-number search (Yu & Huang, 2019) on universally slimmable supernets."""

__version__ = "0.1.0"
