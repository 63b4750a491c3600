//! `usage` against `du -sxB1`.
