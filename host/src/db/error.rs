//! [`DbError`]: what the data layer tells the layers above it.

/// A database failure, already mapped to what it means for the caller.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row does not exist (or is not visible to this tenant).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated; the payload names which one.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// Anything else. Logged, never shown to clients.
    #[error("database error: {0}")]
    Internal(#[from] sqlx::Error),
}

/// Maps unique-constraint violations to [`DbError::Conflict`].
pub trait ResultExt<T> {
    /// On a unique violation, returns `Conflict(what)`.
    fn on_unique(self, what: &'static str) -> Result<T, DbError>;
}

impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn on_unique(self, what: &'static str) -> Result<T, DbError> {
        self.map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => DbError::Conflict(what),
            _ => DbError::Internal(e),
        })
    }
}

impl DbError {
    /// Turns `RowNotFound` into [`DbError::NotFound`].
    pub fn from_fetch(e: sqlx::Error) -> DbError {
        match e {
            sqlx::Error::RowNotFound => DbError::NotFound,
            e => DbError::Internal(e),
        }
    }
}
