"""The audit report: its data model (also the JSON document) and its HTML rendering."""
