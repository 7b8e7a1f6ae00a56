//! Schemas for the wire types whose JSON form is a string with its own grammar (hex ids,
//! scopes), for the OpenAPI documents. Compiled with the `openapi` feature only.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A string schema with a description and, where the grammar is regular, a pattern.
pub fn string_schema(description: &str, pattern: Option<&str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .into()
}

/// A JSON error answer described by `description`, whose body is an
/// [`ErrorBody`](crate::api::ErrorBody) (by reference: the document registers its schema).
pub fn error_response(description: &str) -> utoipa::openapi::response::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// Implements `ToSchema` for a type serialized as a string (see [`string_schema`]).
macro_rules! string_type_schema {
    ($ty:ty, $description:expr, $pattern:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::openapi::string_schema($description, $pattern)
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}

string_type_schema!(
    crate::FileHash,
    "A file's BLAKE3 content hash: 64 hex characters.",
    Some("^[0-9a-fA-F]{64}$")
);
string_type_schema!(
    crate::PeerId,
    "A peer's Ed25519 public key: 64 hex characters.",
    Some("^[0-9a-fA-F]{64}$")
);
string_type_schema!(
    crate::folder::FolderId,
    "A folder's identity (a hash of its sorted relative paths and content hashes): 64 hex characters.",
    Some("^[0-9a-fA-F]{64}$")
);
string_type_schema!(
    crate::PeerSignature,
    "An Ed25519 signature: 128 hex characters.",
    Some("^[0-9a-fA-F]{128}$")
);
string_type_schema!(
    crate::scope::Visibility,
    "Who may see and download a file: `public`, `hidden`, `members`, `contacts`, `group:NAME`, \
     `users:[a, b]`, or `locked:` before any of the last four (listed to all, downloadable by \
     that audience only).",
    None
);

impl utoipa::PartialSchema for crate::pieces::PieceSet {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some("The verified pieces a peer holds of one content."))
            .property(
                "count",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .description(Some("How many pieces the content has.")),
            )
            .required("count")
            .property(
                "held",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "The pieces held, as sorted ranges of piece indexes: `0-9,12,15-20`.",
                    )),
            )
            .required("held")
            .into()
    }
}
impl utoipa::ToSchema for crate::pieces::PieceSet {}
