"""Restore: rebuild full resolution from an archive with a super-resolution generator."""
