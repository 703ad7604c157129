"""Operations across routed databases: migrations, backups and restores."""
