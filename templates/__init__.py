"""Every text a person reads: acknowledgements, digests, reasons. Packaged, and overridable by a folder."""
