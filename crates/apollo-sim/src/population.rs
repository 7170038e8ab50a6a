//! The deterministic synthetic population: identifiers in, the same made-up person out.
//!
//! Everything here is a pure function of the detail's normalised identifier and the rates: a
//! SHA-256 of the identifier (salted per decision) is the only source of variety, so a person is
//! the same across calls, simulator restarts and seeds.

use apollo_client::wire::linkedin_slug;
use apollo_client::{Credits, PersonDetail};
use sha2::{Digest, Sha256};

use crate::config::SimConfig;

/// The shares that decide who matches and what each person has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Share of identifiable people that match.
    pub matched: f64,
    /// Share of matched people with the placeholder email.
    pub placeholder_email: f64,
    /// Share of matched people with a mobile.
    pub mobile: f64,
    /// Share of matched people with a personal email.
    pub personal_email: f64,
    /// Share of matched people the email waterfall finds.
    pub waterfall_email: f64,
    /// Share of matched people the phone waterfall finds.
    pub waterfall_phone: f64,
}

impl From<&SimConfig> for Rates {
    fn from(c: &SimConfig) -> Self {
        Rates {
            matched: c.match_rate,
            placeholder_email: c.placeholder_email_rate,
            mobile: c.mobile_rate,
            personal_email: c.personal_email_rate,
            waterfall_email: c.waterfall_email_rate,
            waterfall_phone: c.waterfall_phone_rate,
        }
    }
}

/// A phone number as the simulator holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimPhone {
    /// E.164 (`+15125550142`), what `sanitized_number` carries.
    pub e164: String,
    /// As Apollo writes it (`+1 512-555-0142`, or `512-555-0142` from a waterfall vendor).
    pub raw: String,
}

/// A waterfall vendor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vendor {
    /// Vendor step id, e.g. `mailscout_email_search-1`.
    pub id: String,
    /// Display name, e.g. `MailScout`.
    pub name: String,
}

/// What one waterfall (email or phone) does for a person: the vendors that missed, then the hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaterfallSearch {
    /// Vendors tried without a result, in order.
    pub missed: Vec<Vendor>,
    /// The vendor that found a value, the value (an email, or an E.164 number), and its raw form.
    pub found: Option<WaterfallFind>,
    /// Credits charged when the value is found (1–4 for an email, 8–25 for a phone).
    pub credits: Credits,
}

/// A value a waterfall vendor found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaterfallFind {
    /// The vendor that found it.
    pub vendor: Vendor,
    /// The value: a lower-cased email, or an E.164 phone number.
    pub value: String,
    /// The value as the vendor wrote it (phones: `206-555-0117`).
    pub raw: String,
    /// The vendor's status (`VERIFIED` or `UNVERIFIED`).
    pub status: String,
}

/// The employer of a simulated person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOrg {
    /// Apollo organization id (24 hex).
    pub id: String,
    /// Name.
    pub name: String,
    /// Primary domain.
    pub domain: String,
    /// Industry.
    pub industry: String,
    /// Estimated head count.
    pub employees: u32,
}

/// Everything the simulator holds about one matched person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimPerson {
    /// Apollo person id (24 hex), stable for the same identifiers.
    pub apollo_id: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Full name.
    pub name: String,
    /// Job title.
    pub title: String,
    /// Seniority (`director`, `vp`, …).
    pub seniority: String,
    /// Departments (`master_sales`, …).
    pub departments: Vec<String>,
    /// LinkedIn profile URL.
    pub linkedin_url: String,
    /// City.
    pub city: String,
    /// State or province.
    pub state: String,
    /// Country.
    pub country: String,
    /// Employer.
    pub organization: SimOrg,
    /// The real work email (known to the simulator even when the answer shows the placeholder).
    pub email: String,
    /// Apollo's status for the work email (`verified`, `guessed`; `unavailable` when locked).
    pub email_status: String,
    /// Whether the synchronous answer shows `email_not_unlocked@domain.com` instead.
    pub email_locked: bool,
    /// Personal emails (shown with `reveal_personal_emails`).
    pub personal_emails: Vec<String>,
    /// Work (HQ) phone, shown in the synchronous answer.
    pub work_phone: Option<SimPhone>,
    /// Mobile, delivered by the phone-reveal webhook (+8 credits).
    pub mobile: Option<SimPhone>,
    /// The email waterfall's outcome.
    pub waterfall_email: WaterfallSearch,
    /// The phone waterfall's outcome.
    pub waterfall_phone: WaterfallSearch,
}

/// The placeholder Apollo sends for an email that exists but is not revealed.
pub const PLACEHOLDER_EMAIL: &str = "email_not_unlocked@domain.com";

/// The normalised identifier a person is derived from, in Apollo's order of precedence: `id`,
/// email, hashed email, LinkedIn slug, then name with domain or organisation. `None` when the
/// detail carries nothing usable (a bare name included).
pub fn identity_key(d: &PersonDetail) -> Option<String> {
    let clean = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_lowercase);
    if let Some(id) = clean(&d.id) {
        return Some(format!("id:{id}"));
    }
    if let Some(email) = clean(&d.email) {
        return Some(format!("email:{email}"));
    }
    if let Some(h) = clean(&d.hashed_email) {
        return Some(format!("hashed_email:{h}"));
    }
    if let Some(url) = clean(&d.linkedin_url) {
        return Some(format!("linkedin:{}", linkedin_slug(&url)));
    }
    let name = match (clean(&d.first_name), clean(&d.last_name)) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        _ => clean(&d.name),
    }?;
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    let org = clean(&d.domain).map(|d| clean_domain(&d)).or_else(|| clean(&d.organization_name))?;
    Some(format!("name:{name}|org:{org}"))
}

/// The detail the simulator answers for `d`: the one its identity is an alias of (the
/// `same_person` knob, `FROM=TO` identity keys), else `d` itself. One step, no chains.
pub fn resolve_alias(d: &PersonDetail, same_person: &[(String, String)]) -> PersonDetail {
    let Some(key) = identity_key(d) else { return d.clone() };
    let Some((_, to)) = same_person.iter().find(|(from, _)| *from == key) else { return d.clone() };
    let mut out = PersonDetail::default();
    let (kind, value) = to.split_once(':').unwrap_or(("", to));
    match kind {
        "email" => out.email = Some(value.to_string()),
        "hashed_email" => out.hashed_email = Some(value.to_string()),
        "linkedin" => out.linkedin_url = Some(format!("https://www.linkedin.com/in/{value}")),
        "id" => out.id = Some(value.to_string()),
        _ => {
            let (name, org) = value.split_once("|org:").unwrap_or((value, ""));
            out.name = Some(name.to_string());
            out.domain = Some(org.to_string());
        }
    }
    out
}

/// The person behind a detail, or `None` when it does not match.
pub fn person_for(d: &PersonDetail, rates: &Rates) -> Option<SimPerson> {
    let key = identity_key(d)?;
    let h = Hasher(key);
    let by_id = d.id.as_deref().map(|s| s.trim().to_lowercase());
    match &by_id {
        // An Apollo id is either well formed (and then it exists) or it does not.
        Some(id) if !is_object_id(id) => return None,
        Some(_) => {}
        None if h.unit("match") >= rates.matched => return None,
        None => {}
    }

    let detail_email = d.email.as_deref().map(|e| e.trim().to_lowercase()).filter(|e| e.contains('@'));
    // Nobody works under the `.invalid` top-level domain (RFC 6761): what a probe relies on.
    if detail_email.as_deref().is_some_and(|e| e.ends_with(".invalid")) {
        return None;
    }
    let email_domain = detail_email.as_deref().and_then(|e| e.split_once('@')).map(|(_, dom)| dom.to_string());
    let work_domain = email_domain.filter(|dom| !FREE_MAIL.contains(&dom.as_str()));

    let (first_name, last_name) = names(d, detail_email.as_deref(), &h);
    let organization = organization(d, work_domain.as_deref(), &h);
    let role = h.pick("role", ROLES);
    let place = h.pick("place", PLACES);
    let name = format!("{first_name} {last_name}");
    let local = format!("{}.{}", ascii_slug(&first_name), ascii_slug(&last_name));

    let email = detail_email.clone().unwrap_or_else(|| format!("{local}@{}", organization.domain));
    let email_locked = h.unit("placeholder") < rates.placeholder_email;
    let email_status = if email_locked {
        "unavailable"
    } else if h.unit("email_status") < 0.8 {
        "verified"
    } else {
        "guessed"
    };
    let personal_emails = if h.unit("personal") < rates.personal_email {
        let provider = h.pick("personal_provider", &["gmail.com", "outlook.com", "icloud.com", "yahoo.com"]);
        vec![format!("{}{}@{provider}", local, h.below("personal_n", 100))]
    } else {
        Vec::new()
    };

    // Three distinct lines in the fictional 555-01xx range: work HQ, mobile, waterfall phone.
    let line = h.below("line", 100);
    let work_phone = (h.unit("work_phone") < 0.8).then(|| phone(place.area, line, true));
    let mobile = (h.unit("mobile") < rates.mobile).then(|| phone(place.area, (line + 37) % 100, true));

    let waterfall_email =
        waterfall(&h, "wf_email", EMAIL_VENDORS, rates.waterfall_email, 1, 4, || (email.clone(), email.clone()));
    let waterfall_phone = waterfall(&h, "wf_phone", PHONE_VENDORS, rates.waterfall_phone, 8, 25, || {
        let p = phone(place.area, (line + 71) % 100, false);
        (p.e164, p.raw)
    });

    let linkedin_url =
        d.linkedin_url.as_deref().map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).unwrap_or_else(|| {
            format!(
                "http://www.linkedin.com/in/{}-{}-{}",
                ascii_slug(&first_name),
                ascii_slug(&last_name),
                &h.hex("li", 4)
            )
        });

    Some(SimPerson {
        apollo_id: by_id.unwrap_or_else(|| h.hex("person_id", 12)),
        first_name,
        last_name,
        name,
        title: role.title.to_string(),
        seniority: role.seniority.to_string(),
        departments: vec![role.department.to_string()],
        linkedin_url,
        city: place.city.to_string(),
        state: place.state.to_string(),
        country: place.country.to_string(),
        organization,
        email,
        email_status: email_status.to_string(),
        email_locked,
        personal_emails,
        work_phone,
        mobile,
        waterfall_email,
        waterfall_phone,
    })
}

/// Hash-derived choices for one identifier; each decision salts the hash with its own label so
/// decisions are independent of each other.
struct Hasher(String);

impl Hasher {
    fn bytes(&self, label: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.0.as_bytes());
        hasher.update(b"\x1f");
        hasher.update(label.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(&hasher.finalize());
        out
    }

    fn u64(&self, label: &str) -> u64 {
        let b = self.bytes(label);
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// Uniform in `[0, 1)`.
    fn unit(&self, label: &str) -> f64 {
        (self.u64(label) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&self, label: &str, n: u64) -> u64 {
        self.u64(label) % n
    }

    fn pick<'a, T>(&self, label: &str, items: &'a [T]) -> &'a T {
        &items[self.below(label, items.len() as u64) as usize]
    }

    fn hex(&self, label: &str, len_bytes: usize) -> String {
        hex(&self.bytes(label)[..len_bytes])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 24 lower-case hex digits, the shape of Apollo's (MongoDB) ids.
pub fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn clean_domain(d: &str) -> String {
    let d = d.trim().to_lowercase();
    let d = d.trim_start_matches("http://").trim_start_matches("https://");
    let d = d.rsplit('@').next().unwrap_or(d);
    let d = d.strip_prefix("www.").unwrap_or(d);
    d.split('/').next().unwrap_or(d).to_string()
}

fn ascii_slug(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

fn title_case(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
        None => String::new(),
    }
}

/// Names from the detail when given, else from an email such as `dana.okafor@…`, else made up.
fn names(d: &PersonDetail, email: Option<&str>, h: &Hasher) -> (String, String) {
    let given = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    if let (Some(f), Some(l)) = (given(&d.first_name), given(&d.last_name)) {
        return (f, l);
    }
    if let Some(full) = given(&d.name) {
        let mut parts = full.split_whitespace();
        if let (Some(f), Some(l)) = (parts.next(), parts.next_back()) {
            return (f.to_string(), l.to_string());
        }
    }
    if let Some(local) = email.and_then(|e| e.split_once('@')).map(|(l, _)| l) {
        let parts: Vec<&str> = local.split(['.', '_']).collect();
        if parts.len() == 2 && parts.iter().all(|p| p.len() > 1 && p.chars().all(|c| c.is_ascii_alphabetic())) {
            return (title_case(parts[0]), title_case(parts[1]));
        }
    }
    (h.pick("first", FIRST_NAMES).to_string(), h.pick("last", LAST_NAMES).to_string())
}

/// The employer: from the detail's domain or organisation name, the email's domain, or made up.
fn organization(d: &PersonDetail, email_domain: Option<&str>, h: &Hasher) -> SimOrg {
    let given = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let domain = given(&d.domain).map(|x| clean_domain(&x)).or_else(|| email_domain.map(str::to_string));
    let org_name = given(&d.organization_name);
    let (name, domain) = match (org_name, domain) {
        (Some(n), Some(dom)) => (n, dom),
        (Some(n), None) => {
            let dom = format!("{}.com", ascii_slug(&n));
            (n, dom)
        }
        (None, Some(dom)) => {
            let label = dom.split('.').next().unwrap_or(&dom);
            (label.split(['-', '_']).map(title_case).collect::<Vec<_>>().join(" "), dom)
        }
        (None, None) => {
            let (n, dom) = h.pick("org", COMPANIES);
            (n.to_string(), dom.to_string())
        }
    };
    let org_hash = Hasher(format!("org:{domain}"));
    SimOrg {
        id: org_hash.hex("org_id", 12),
        industry: org_hash.pick("industry", INDUSTRIES).to_string(),
        employees: 10 + org_hash.below("employees", 5_000) as u32,
        name,
        domain,
    }
}

fn phone(area: u16, line: u64, international: bool) -> SimPhone {
    let local = format!("{area}-555-01{line:02}");
    SimPhone { e164: format!("+1{area}55501{line:02}"), raw: if international { format!("+1 {local}") } else { local } }
}

fn waterfall(
    h: &Hasher,
    label: &str,
    vendors: &[(&str, &str)],
    rate: f64,
    min_credits: u64,
    max_credits: u64,
    value: impl FnOnce() -> (String, String),
) -> WaterfallSearch {
    let found = h.unit(label) < rate;
    // Up to two vendors miss before the one that hits (or up to three miss in a row).
    let misses =
        (h.below(&format!("{label}_misses"), 3) as usize + usize::from(!found)).min(vendors.len() - usize::from(found));
    let start = h.below(&format!("{label}_start"), vendors.len() as u64) as usize;
    let vendor = |i: usize| {
        let (id, name) = vendors[(start + i) % vendors.len()];
        Vendor { id: format!("{id}-1"), name: name.to_string() }
    };
    let missed: Vec<Vendor> = (0..misses).map(vendor).collect();
    let found = found.then(|| {
        let v = vendor(missed.len());
        let (value, raw) = value();
        let status = if h.unit(&format!("{label}_verified")) < 0.7 { "VERIFIED" } else { "UNVERIFIED" };
        WaterfallFind { vendor: v, value, raw, status: status.to_string() }
    });
    let credits =
        Credits::whole((min_credits + h.below(&format!("{label}_credits"), max_credits - min_credits + 1)) as i64);
    WaterfallSearch { missed, found, credits }
}

const FREE_MAIL: &[&str] =
    &["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me", "aol.com"];

const FIRST_NAMES: &[&str] = &[
    "Dana", "Li", "Priya", "Tomasz", "Amara", "Mateo", "Sofia", "Kenji", "Noor", "Elena", "Marcus", "Aisha", "Jonas",
    "Camila", "Ravi", "Hannah", "Diego", "Mei", "Samuel", "Leila", "Oskar", "Fatima", "Lucas", "Ingrid", "Kwame",
    "Chloe", "Arjun", "Beatriz", "Ethan", "Yara",
];

const LAST_NAMES: &[&str] = &[
    "Okafor",
    "Wei",
    "Raman",
    "Nowak",
    "Silva",
    "Tanaka",
    "Haddad",
    "Petrov",
    "Garcia",
    "Lindqvist",
    "Mensah",
    "Dubois",
    "Kowalski",
    "Nakamura",
    "Rossi",
    "Fischer",
    "Oyelaran",
    "Chen",
    "Murphy",
    "Santos",
    "Novak",
    "Iyer",
    "Bergstrom",
    "Adeyemi",
    "Moreau",
    "Kim",
    "Costa",
    "Walsh",
    "Sato",
    "Hughes",
];

const COMPANIES: &[(&str, &str)] = &[
    ("Northwind Labs", "northwind-labs.com"),
    ("Harbor Analytics", "harbor-analytics.io"),
    ("Kestrel Robotics", "kestrelrobotics.com"),
    ("Bluefin Logistics", "bluefinlogistics.com"),
    ("Cedar & Pine Health", "cedarpinehealth.com"),
    ("Quantum Orchard", "quantumorchard.ai"),
    ("Lumen Payments", "lumenpay.com"),
    ("Granite Peak Software", "granitepeak.dev"),
    ("Solstice Energy", "solstice-energy.com"),
    ("Marigold Media", "marigoldmedia.co"),
];

const INDUSTRIES: &[&str] = &[
    "computer software",
    "information technology & services",
    "financial services",
    "logistics & supply chain",
    "hospital & health care",
    "marketing & advertising",
    "renewables & environment",
];

struct Role {
    title: &'static str,
    seniority: &'static str,
    department: &'static str,
}

const ROLES: &[Role] = &[
    Role { title: "Director of Revenue Operations", seniority: "director", department: "master_sales" },
    Role { title: "VP Engineering", seniority: "vp", department: "master_engineering_technical" },
    Role { title: "Head of Data", seniority: "head", department: "master_information_technology" },
    Role { title: "Account Executive", seniority: "senior", department: "master_sales" },
    Role { title: "Marketing Manager", seniority: "manager", department: "master_marketing" },
    Role { title: "Chief Financial Officer", seniority: "c_suite", department: "master_finance" },
    Role { title: "Senior Software Engineer", seniority: "senior", department: "master_engineering_technical" },
    Role { title: "Talent Acquisition Lead", seniority: "manager", department: "master_human_resources" },
    Role { title: "Product Manager", seniority: "manager", department: "master_product_management" },
    Role { title: "Founder & CEO", seniority: "founder", department: "c_suite" },
];

struct Place {
    city: &'static str,
    state: &'static str,
    country: &'static str,
    area: u16,
}

const PLACES: &[Place] = &[
    Place { city: "Austin", state: "Texas", country: "United States", area: 512 },
    Place { city: "Seattle", state: "Washington", country: "United States", area: 206 },
    Place { city: "Toronto", state: "Ontario", country: "Canada", area: 416 },
    Place { city: "Denver", state: "Colorado", country: "United States", area: 303 },
    Place { city: "Boston", state: "Massachusetts", country: "United States", area: 617 },
    Place { city: "Chicago", state: "Illinois", country: "United States", area: 312 },
    Place { city: "Atlanta", state: "Georgia", country: "United States", area: 404 },
    Place { city: "San Francisco", state: "California", country: "United States", area: 415 },
    Place { city: "Vancouver", state: "British Columbia", country: "Canada", area: 604 },
    Place { city: "New York", state: "New York", country: "United States", area: 212 },
];

const EMAIL_VENDORS: &[(&str, &str)] = &[
    ("mailscout_email_search", "MailScout"),
    ("prospectly_email_finder", "Prospectly"),
    ("clearbridge_email", "Clearbridge"),
    ("inboxiq_verifier", "InboxIQ"),
];

const PHONE_VENDORS: &[(&str, &str)] = &[
    ("dialsource_mobile_finder", "DialSource"),
    ("ringwise_mobile", "RingWise"),
    ("cellpoint_direct_dial", "CellPoint"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(matched: f64) -> Rates {
        Rates {
            matched,
            placeholder_email: 0.0,
            mobile: 1.0,
            personal_email: 0.0,
            waterfall_email: 1.0,
            waterfall_phone: 1.0,
        }
    }

    fn detail(f: impl FnOnce(&mut PersonDetail)) -> PersonDetail {
        let mut d = PersonDetail::default();
        f(&mut d);
        d
    }

    #[test]
    fn identity_follows_apollos_precedence() {
        let d = detail(|d| {
            d.email = Some(" Li.Wei@Harbor.io ".into());
            d.first_name = Some("Li".into());
            d.last_name = Some("Wei".into());
            d.domain = Some("harbor.io".into());
        });
        assert_eq!(identity_key(&d).as_deref(), Some("email:li.wei@harbor.io"));
        let d = detail(|d| d.linkedin_url = Some("https://www.linkedin.com/in/Priya-Raman-5a1b/".into()));
        assert_eq!(identity_key(&d).as_deref(), Some("linkedin:priya-raman-5a1b"));
        let d = detail(|d| {
            d.name = Some("Tomasz  Nowak".into());
            d.domain = Some("www.Kestrel.com".into());
        });
        assert_eq!(identity_key(&d).as_deref(), Some("name:tomasz nowak|org:kestrel.com"));
        assert_eq!(identity_key(&detail(|d| d.name = Some("Tomasz Nowak".into()))), None);
        assert_eq!(identity_key(&PersonDetail::default()), None);
    }

    #[test]
    fn same_identifiers_give_the_same_person() {
        let d = detail(|d| {
            d.first_name = Some("Dana".into());
            d.last_name = Some("Okafor".into());
            d.domain = Some("northwind-labs.com".into());
        });
        let a = person_for(&d, &rates(1.0)).unwrap();
        let b = person_for(&d.clone(), &rates(1.0)).unwrap();
        assert_eq!(a, b);
        assert!(is_object_id(&a.apollo_id));
        assert_eq!(a.name, "Dana Okafor");
        assert_eq!(a.email, "dana.okafor@northwind-labs.com");
        assert_eq!(a.organization.domain, "northwind-labs.com");
        assert_eq!(a.organization.name, "Northwind Labs");
        let mobile = a.mobile.unwrap();
        assert!(mobile.e164.starts_with("+1") && mobile.e164.len() == 12, "{mobile:?}");
        assert_eq!(mobile.raw.len(), "+1 512-555-0142".len());
        assert_ne!(Some(mobile.e164), a.work_phone.map(|p| p.e164));
        let other = detail(|d| d.email = Some("someone.else@northwind-labs.com".into()));
        assert_ne!(person_for(&other, &rates(1.0)).unwrap().apollo_id, a.apollo_id);
    }

    #[test]
    fn aliases_give_one_person_two_identifiers() {
        let by_email = detail(|d| d.email = Some("dana.okafor@northwind-labs.com".into()));
        let by_linkedin = detail(|d| d.linkedin_url = Some("https://linkedin.com/in/Dana-O-77/".into()));
        let aliases = vec![("linkedin:dana-o-77".to_string(), "email:dana.okafor@northwind-labs.com".to_string())];
        let a = person_for(&resolve_alias(&by_email, &aliases), &rates(1.0)).unwrap();
        let b = person_for(&resolve_alias(&by_linkedin, &aliases), &rates(1.0)).unwrap();
        assert_eq!(a, b);
        let unaliased = person_for(&resolve_alias(&by_linkedin, &[]), &rates(1.0)).unwrap();
        assert_ne!(unaliased.apollo_id, a.apollo_id);
        let by_name = vec![("email:x@y.io".to_string(), "name:dana okafor|org:northwind-labs.com".to_string())];
        let n = resolve_alias(&detail(|d| d.email = Some(" X@Y.io".into())), &by_name);
        assert_eq!(identity_key(&n).as_deref(), Some("name:dana okafor|org:northwind-labs.com"));
    }

    #[test]
    fn apollo_ids_are_kept_and_bare_names_never_match() {
        let d = detail(|d| d.id = Some("6501A9F2C4DFAE0001A1B2C3".into()));
        assert_eq!(person_for(&d, &rates(0.0)).unwrap().apollo_id, "6501a9f2c4dfae0001a1b2c3");
        assert_eq!(person_for(&detail(|d| d.id = Some("nope".into())), &rates(1.0)), None);
        assert_eq!(person_for(&detail(|d| d.name = Some("Ann Lee".into())), &rates(1.0)), None);
        let probe = detail(|d| d.email = Some("enrichd-probe@example.invalid".into()));
        assert_eq!(person_for(&probe, &rates(1.0)), None, "nobody works under .invalid");
        assert!(person_for(&detail(|d| d.email = Some("ann@example.org".into())), &rates(1.0)).is_some());
    }

    #[test]
    fn rates_hold_roughly_and_exactly_at_the_ends() {
        let many: Vec<PersonDetail> =
            (0..2_000).map(|i| detail(|d| d.email = Some(format!("person{i}@example.org")))).collect();
        let share = |r: &Rates, f: &dyn Fn(&SimPerson) -> bool| {
            many.iter().filter(|d| person_for(d, r).is_some_and(|p| f(&p))).count() as f64 / many.len() as f64
        };
        let r = Rates { matched: 0.85, placeholder_email: 0.3, mobile: 0.7, ..rates(0.85) };
        assert!((share(&r, &|_| true) - 0.85).abs() < 0.04);
        assert!((share(&r, &|p| p.email_locked) - 0.85 * 0.3).abs() < 0.04);
        assert!((share(&r, &|p| p.mobile.is_some()) - 0.85 * 0.7).abs() < 0.04);
        assert_eq!(share(&rates(0.0), &|_| true), 0.0);
        assert_eq!(share(&Rates { placeholder_email: 1.0, ..rates(1.0) }, &|p| p.email_locked), 1.0);
    }

    #[test]
    fn waterfall_outcomes_are_priced_and_traced() {
        let p = person_for(&detail(|d| d.email = Some("li.wei@harbor.io".into())), &rates(1.0)).unwrap();
        let email = p.waterfall_email.found.as_ref().unwrap();
        assert_eq!(email.value, "li.wei@harbor.io");
        assert!((1..=4).contains(&(p.waterfall_email.credits.micros() / 1_000_000)));
        let phone = p.waterfall_phone.found.as_ref().unwrap();
        assert!(phone.value.starts_with("+1") && !phone.raw.starts_with('+'));
        assert!((8..=25).contains(&(p.waterfall_phone.credits.micros() / 1_000_000)));
        assert!(!p.waterfall_phone.missed.contains(&phone.vendor));
        let none = person_for(
            &detail(|d| d.email = Some("li.wei@harbor.io".into())),
            &Rates { waterfall_email: 0.0, ..rates(1.0) },
        )
        .unwrap();
        assert!(none.waterfall_email.found.is_none() && !none.waterfall_email.missed.is_empty());
    }
}
