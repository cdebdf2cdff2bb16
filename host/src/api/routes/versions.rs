//! Versions: upload a component (raw `application/wasm` body, streamed under a size
//! limit, validated and compiled before it is accepted), list, and activate (which is
//! also how a rollback is done).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::{find, forget};
use crate::api::error::{ErrorBody, ErrorCode, responses};
use crate::api::extract::{ApiPath, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::agents::{self, AgentChange, AgentVersion};
use crate::db::keys::Role;
use crate::db::{self, DbError, audit, tenants};
use crate::runtime::{LoadError, Runtime};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload, list))
        .routes(routes!(activate))
}

/// A version as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Version)]
pub struct VersionView {
    /// The version's id (UUIDv7).
    id: String,
    /// The semver the component reports from `describe()`; unique per agent.
    version: String,
    /// Hex SHA-256 of the component bytes; unique per agent.
    sha256: String,
    /// Size of the component.
    size_bytes: i64,
    metadata: serde_json::Value,
    /// The id of the API key that uploaded it.
    uploaded_by: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    /// Whether it is the agent's active version.
    active: bool,
}

impl VersionView {
    fn new(v: &AgentVersion, active_version_id: Option<&str>) -> Self {
        VersionView {
            id: v.id.clone(),
            version: v.version.clone(),
            sha256: v.sha256.clone(),
            size_bytes: v.size_bytes,
            metadata: v.metadata.0.clone(),
            uploaded_by: v.uploaded_by.clone(),
            created_at: v.created_at,
            active: active_version_id == Some(v.id.as_str()),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// Make the new version the active one. Default: only if the agent has no active
    /// version yet.
    activate: Option<bool>,
}

/// The error code for each way a component can be unfit.
/// The plan cap that storing one more component of `size` bytes would pass, if any.
fn over_caps(
    caps: &crate::policy::PlanCaps,
    count: i64,
    total: i64,
    size: i64,
) -> Option<(&'static str, u64)> {
    [
        ("max_versions", caps.max_versions, count + 1),
        (
            "max_total_component_bytes",
            caps.max_total_component_bytes,
            total + size,
        ),
    ]
    .into_iter()
    .find_map(|(cap, max, after)| max.filter(|&m| after > m as i64).map(|m| (cap, m)))
}

/// After a refused upload compiled: drops it from the caches unless some stored version
/// (of any tenant) has the same bytes.
async fn forget_unless_stored(state: &AppState, sha256: &str) {
    let stored: Result<Option<(String,)>, sqlx::Error> = crate::in_scope!(&state.db, crate::db::Wide::Housekeeping, conn => sqlx::query_as(
        "SELECT id FROM agent_versions WHERE sha256 = $1 LIMIT 1")
        .bind(sha256)
        .fetch_optional(conn)
        .await);
    if matches!(stored, Ok(None)) {
        state.runtime.forget(sha256).await;
    }
}

fn load_error(e: LoadError) -> ApiError {
    let code = match &e {
        LoadError::NotAComponent(_) => ErrorCode::NotAComponent,
        LoadError::Malformed(_) => ErrorCode::MalformedComponent,
        LoadError::TooComplex(_) => ErrorCode::ComponentTooComplex,
        LoadError::Invalid(_) => ErrorCode::InvalidComponent,
        LoadError::CompileTimedOut(_) | LoadError::CompileResourcesExhausted { .. } => {
            ErrorCode::CompileLimitExceeded
        }
        LoadError::UnknownImport(_) => ErrorCode::UnsupportedImport,
        LoadError::WrongWorld(_) => ErrorCode::WrongWorld,
        LoadError::DescribeFailed { .. } => ErrorCode::DescribeFailed,
        LoadError::BadMetadata(_) => ErrorCode::BadMetadata,
        LoadError::Internal(m) => return ApiError::internal(m),
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
}

/// Upload a version
///
/// **Role:** developer.
///
/// Uploads a component as the raw request body (`Content-Type: application/wasm`, at
/// most `CORRAL_MAX_UPLOAD` bytes, or the tenant plan's `caps.max_component_bytes` if
/// smaller). It is validated, compiled and asked to `describe()` itself before anything
/// is stored; its version is the semver it reports. Uploading bytes identical to an
/// existing version of the agent returns that version with `200` (nothing new is
/// stored, so no plan cap refuses it). A new version that would take the tenant past
/// `caps.max_versions` or `caps.max_total_component_bytes` is refused with `409
/// plan_limit_reached`, recorded in the audit trail as a denial.
#[utoipa::path(
    post,
    path = "/agents/{name}/versions",
    operation_id = "uploadVersion",
    tag = "versions",
    params(
        ("name" = String, Path, description = "The agent's name."),
        UploadQuery,
    ),
    request_body(content = [u8], content_type = "application/wasm", description = "The component's bytes."),
    responses(
        (status = 200, description = "These exact bytes were already uploaded: the existing version.", body = VersionView),
        (status = 201, description = "The new version.", body = VersionView),
        (status = 400, description = "The path or query is invalid (`invalid_path`, `invalid_query`), or the upload is empty (`empty_body`). Codes: `invalid_path`, `invalid_query`, `empty_body`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
        (status = 409, description = "The agent already has a different component with this version (`version_exists`), or storing it would exceed the tenant's plan caps on versions or total bytes (`plan_limit_reached`; the message names the cap). Codes: `version_exists`, `plan_limit_reached`.", body = ErrorBody),
        (status = 413, description = "The component is larger than `CORRAL_MAX_UPLOAD` (`payload_too_large`), or than the tenant plan's `caps.max_component_bytes` where that is smaller (`component_too_large`). Reading stops at the limit. Codes: `payload_too_large`, `component_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/wasm`. Codes: `unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "The component is unfit to run. Codes: `not_a_component`, `malformed_component`, `component_too_complex`, `invalid_component`, `compile_limit_exceeded`, `unsupported_import`, `wrong_world`, `describe_failed`, `bad_metadata`.", body = ErrorBody),
    )
)]
async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<VersionView>), ApiError> {
    principal
        .require_on_agent(&state, Role::Developer, "version.upload", &name)
        .await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/wasm" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "upload the component as the raw body with `Content-Type: application/wasm`",
        ));
    }
    let mut agent = find(&state, &principal, &name).await?;

    // Streamed: reading stops (413) as soon as the body passes the limit — the
    // host's, or the tenant plan's if that is smaller.
    let host_limit = state.settings.max_upload_bytes;
    let plan_limit = state
        .tenant(principal.tenant_id())
        .await?
        .policy
        .0
        .caps
        .max_component_bytes;
    let limit = plan_limit.map_or(host_limit, |p| host_limit.min(p as usize));
    let too_large = || {
        if limit < host_limit {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::ComponentTooLarge,
                format!("the tenant's plan allows components of at most {limit} bytes"),
            )
        } else {
            ApiError::too_large(limit)
        }
    };
    // A declared length is checked before the body is read: the client, waiting for
    // `100 Continue`, never sends it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    if declared == Some(0) {
        return Err(ApiError::bad_request(
            ErrorCode::EmptyBody,
            "the upload is empty: send the component's bytes",
        ));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if over {
            too_large()
        } else {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::BodyTimeout,
                "the request body was not sent in time",
            )
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::EmptyBody,
            "the upload is empty: send the component's bytes",
        ));
    }

    let sha256 = Runtime::content_hash(&bytes);
    if let Some(existing) =
        agents::version_by_hash(&state.db, principal.tenant_id(), &agent.id, &sha256).await?
    {
        // Identical bytes: the same version, nothing new to store.
        return Ok((
            StatusCode::OK,
            Json(VersionView::new(
                &existing,
                agent.active_version_id.as_deref(),
            )),
        ));
    }

    // Plan caps that the size alone decides are checked before compiling, so a refused
    // upload costs no compile (and leaves nothing cached); the exact check is below.
    let caps = state.tenant(principal.tenant_id()).await?.policy.0.caps;
    if caps.max_versions.is_some() || caps.max_total_component_bytes.is_some() {
        let mut tx = state.db.begin(principal.tenant_id()).await?;
        let (count, total) = agents::stored(&mut tx, principal.tenant_id()).await?;
        drop(tx);
        if let Some((cap, max)) = over_caps(&caps, count, total, bytes.len() as i64) {
            return Err(
                super::agents::plan_limit(&state, &principal, "version.upload", cap, max).await,
            );
        }
    }

    // Validates, compiles (in a capped worker, off the executor) and calls describe().
    let loaded = match state.runtime.load(bytes.to_vec()).await {
        Ok(loaded) => loaded,
        Err(e) => {
            // It may have compiled (a wrong world, a failed describe): keep nothing.
            forget_unless_stored(&state, &sha256).await;
            return Err(load_error(e));
        }
    };
    let version = AgentVersion {
        id: db::new_id(),
        tenant_id: principal.tenant_id().into(),
        agent_id: agent.id.clone(),
        version: loaded.metadata.version.clone(),
        sha256,
        size_bytes: bytes.len() as i64,
        metadata: DbJson(serde_json::to_value(&loaded.metadata).expect("metadata serializes")),
        uploaded_by: Some(principal.key.id.clone()),
        created_at: db::now(),
    };
    let activate = query.activate.unwrap_or(agent.active_version_id.is_none());

    let mut event = principal.event("version.upload", "agent_version", Some(&version.id));
    event.after = Some(DbJson(serde_json::json!({
        "agent": agent.name, "version": version.version, "sha256": version.sha256,
        "size_bytes": version.size_bytes, "activated": activate,
    })));
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    let caps = tenants::lock(&mut tx, principal.tenant_id())
        .await?
        .policy
        .0
        .caps;
    if caps.max_versions.is_some() || caps.max_total_component_bytes.is_some() {
        let (count, total) = agents::stored(&mut tx, principal.tenant_id()).await?;
        if let Some((cap, max)) = over_caps(&caps, count, total, version.size_bytes) {
            drop(tx);
            forget_unless_stored(&state, &version.sha256).await;
            return Err(
                super::agents::plan_limit(&state, &principal, "version.upload", cap, max).await,
            );
        }
    }
    agents::insert_version(&mut tx, &version, &bytes)
        .await
        .map_err(|e| match e {
            DbError::Conflict(m) => ApiError::conflict(ErrorCode::VersionExists, m),
            e => e.into(),
        })?;
    if activate {
        agent.active_version_id = Some(version.id.clone());
        agents::update(
            &mut tx,
            principal.tenant_id(),
            &agent.id,
            AgentChange::ActiveVersion(&version.id),
        )
        .await?;
    }
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    forget(&state, &principal, &name);
    drop(loaded); // the runtime's cache keeps it, by content hash
    Ok((
        StatusCode::CREATED,
        Json(VersionView::new(
            &version,
            agent.active_version_id.as_deref(),
        )),
    ))
}

/// List versions
///
/// **Role:** viewer.
///
/// The agent's versions, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/agents/{name}/versions",
    operation_id = "listVersions",
    tag = "versions",
    params(
        ("name" = String, Path, description = "The agent's name."),
        Page,
    ),
    responses(
        (status = 200, description = "A page of versions.", body = Paged<VersionView>),
        (status = 400, response = responses::InvalidPathOrQuery),
        (status = 404, response = responses::AgentNotFound),
    )
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Paged<VersionView>>, ApiError> {
    principal
        .require_on_agent(&state, Role::Viewer, "version.list", &name)
        .await?;
    let agent = find(&state, &principal, &name).await?;
    let limit = page.limit()?;
    let rows = agents::versions(
        &state.db,
        principal.tenant_id(),
        &agent.id,
        page.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let page = Paged::from_rows(rows, limit, |v| v.id.clone());
    Ok(Json(Paged {
        items: page
            .items
            .iter()
            .map(|v| VersionView::new(v, agent.active_version_id.as_deref()))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Activate a version
///
/// **Role:** developer.
///
/// Makes a version the one invocations run by default. Activating an older version is
/// how a rollback is done.
#[utoipa::path(
    post,
    path = "/agents/{name}/versions/{version}/activate",
    operation_id = "activateVersion",
    tag = "versions",
    params(
        ("name" = String, Path, description = "The agent's name."),
        ("version" = String, Path, description = "The version's id or semver."),
    ),
    responses(
        (status = 200, description = "The version, now active.", body = VersionView),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No live agent of this name, or it has no such version. Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn activate(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<Json<VersionView>, ApiError> {
    principal
        .require_on_agent(&state, Role::Developer, "version.activate", &name)
        .await?;
    let mut agent = find(&state, &principal, &name).await?;
    let target = agents::version(&state.db, principal.tenant_id(), &agent.id, &version)
        .await
        .map_err(|e| match e {
            DbError::NotFound => {
                ApiError::not_found(format!("version {version:?} of agent {name:?}"))
            }
            e => e.into(),
        })?;
    let mut event = principal.event("version.activate", "agent", Some(&agent.id));
    event.before = Some(DbJson(
        serde_json::json!({ "active_version_id": agent.active_version_id }),
    ));
    event.after = Some(DbJson(
        serde_json::json!({ "active_version_id": target.id, "version": target.version }),
    ));
    agent.active_version_id = Some(target.id.clone());
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    agents::update(
        &mut tx,
        principal.tenant_id(),
        &agent.id,
        AgentChange::ActiveVersion(&target.id),
    )
    .await?;
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    forget(&state, &principal, &name);
    Ok(Json(VersionView::new(&target, Some(&target.id))))
}
