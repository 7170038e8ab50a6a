//! enrichd library
