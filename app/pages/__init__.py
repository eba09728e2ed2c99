"""The HTML pages and the offline API docs."""
