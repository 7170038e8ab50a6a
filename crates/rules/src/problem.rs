//! A problem with a request value, found by a rule: where and what. The API answers it as is.

/// One problem: where (`states[1]`, `from`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Path of the offending value.
    pub field: String,
    /// Its index, for problems inside a list.
    pub index: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl FieldProblem {
    /// The problem of `field`.
    pub fn new(field: impl Into<String>, index: Option<usize>, message: impl Into<String>) -> FieldProblem {
        FieldProblem { field: field.into(), index, message: message.into() }
    }
}
