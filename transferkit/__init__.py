"""transferkit: label-efficient transfer learning across domains and tasks."""

__version__ = "0.1.0"
