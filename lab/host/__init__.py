"""This machine's resources: child processes, where files go, storages, source images."""
