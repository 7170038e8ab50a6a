//! The fields an input person may carry: declared here once. The request model, the validator, the
//! person key, the CSV mapping and the export read them from [`PersonField`].

/// One field of an input person (besides `source_row`, the spreadsheet row kept as given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PersonField {
    /// First name.
    FirstName,
    /// Last name.
    LastName,
    /// Full name.
    Name,
    /// Email address.
    Email,
    /// MD5 or SHA-256 hex digest of the lower-cased email.
    HashedEmail,
    /// Company name.
    OrganizationName,
    /// Company domain.
    Domain,
    /// Apollo person id.
    Id,
    /// LinkedIn profile URL.
    LinkedinUrl,
    /// The client's own id for the person.
    ExternalId,
}

impl PersonField {
    /// Every field, in the order of the request model (a person given as an array is read by
    /// position in this order, `source_row` after them).
    pub const ALL: [PersonField; 10] = [
        PersonField::FirstName,
        PersonField::LastName,
        PersonField::Name,
        PersonField::Email,
        PersonField::HashedEmail,
        PersonField::OrganizationName,
        PersonField::Domain,
        PersonField::Id,
        PersonField::LinkedinUrl,
        PersonField::ExternalId,
    ];

    /// Every field in the order of their names: the key order of a stored person's JSON object.
    pub const BY_NAME: [PersonField; 10] = [
        PersonField::Domain,
        PersonField::Email,
        PersonField::ExternalId,
        PersonField::FirstName,
        PersonField::HashedEmail,
        PersonField::Id,
        PersonField::LastName,
        PersonField::LinkedinUrl,
        PersonField::Name,
        PersonField::OrganizationName,
    ];

    /// The field's name in JSON and CSV.
    pub const fn name(self) -> &'static str {
        match self {
            PersonField::FirstName => "first_name",
            PersonField::LastName => "last_name",
            PersonField::Name => "name",
            PersonField::Email => "email",
            PersonField::HashedEmail => "hashed_email",
            PersonField::OrganizationName => "organization_name",
            PersonField::Domain => "domain",
            PersonField::Id => "id",
            PersonField::LinkedinUrl => "linkedin_url",
            PersonField::ExternalId => "external_id",
        }
    }

    /// The field named `name`.
    pub fn from_name(name: &str) -> Option<PersonField> {
        PersonField::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The field's place in [`PersonField::ALL`] (an index into a per-field array).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Every field name, in [`PersonField::ALL`] order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        PersonField::ALL.into_iter().map(PersonField::name)
    }
}

impl std::fmt::Display for PersonField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of the person field that holds a spreadsheet row as given (kept for exports, never
/// sent to Apollo).
pub const SOURCE_ROW: &str = "source_row";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_names() {
        for (i, f) in PersonField::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i);
            assert_eq!(PersonField::from_name(f.name()), Some(f));
        }
        let mut sorted = PersonField::ALL.to_vec();
        sorted.sort_by_key(|f| f.name());
        assert_eq!(PersonField::BY_NAME.to_vec(), sorted);
        let names: Vec<&str> = PersonField::names().collect();
        assert_eq!(names.len(), 10);
        assert_eq!((names[0], names[9]), ("first_name", "external_id"));
        assert!(names.iter().all(|n| *n < SOURCE_ROW), "source_row sorts after every field");
        assert_eq!(PersonField::from_name("title"), None);
        assert_eq!(PersonField::LinkedinUrl.to_string(), "linkedin_url");
    }
}
