//! Node routes: get, find, count, create, replace, patch, batch set, hierarchy.

use kernelci::models::{Node, NodePatch, ObjectId, User, input};
use kernelci::query::{Query, QueryError};
use kernelci::store::{Cursor, EventMode, FindOptions, StoreError, UpdateRule};
use serde_json::{Value, json};
use warp::reply::Response;

use super::object_id;
use crate::app::App;
use crate::http::{ApiError, Request, ok, ok_json_text};
use crate::stream;

/// Whether `user` may edit `node` (api spec §5).
pub fn can_edit(user: &User, node: &Node) -> bool {
    if user.is_superuser
        || node.owner.as_deref() == Some(user.username.as_str())
        || user.in_group("node:edit:any")
    {
        return true;
    }
    if user
        .groups
        .iter()
        .any(|g| node.user_groups.contains(&g.name))
    {
        return true;
    }
    match node.data_str("runtime") {
        Some(rt) if !rt.is_empty() => {
            user.in_group(&format!("runtime:{rt}:node-editor"))
                || user.in_group(&format!("runtime:{rt}:node-admin"))
        }
        _ => false,
    }
}

/// An authenticated user without edit permission: 403 with upstream's text (upstream answered
/// 401, which means "who are you", not "you may not").
fn edit_denied() -> ApiError {
    ApiError::new(
        warp::http::StatusCode::FORBIDDEN,
        "Unauthorized to complete the operation",
    )
}

/// `GET /node/{id}`.
pub async fn get(app: &App, id: &str) -> Result<Response, ApiError> {
    let id = object_id(id)?;
    match app.store.get_node_json(id).await? {
        Some(doc) => ok_json_text(doc),
        None => ok(Value::Null),
    }
}

/// A `Node` body checked the way FastAPI checks it (422 with pydantic's list, locations under
/// `prefix`) and decoded.
fn node_body(mut body: Value, prefix: &[Value]) -> Result<Node, ApiError> {
    let errors = input::check_node_input(&mut body);
    if !errors.is_empty() {
        return Err(ApiError::unprocessable_input(prefix, &errors));
    }
    Ok(input::node_from_input(body)?)
}

fn parse_query(req: &Request) -> Result<Query, ApiError> {
    Query::parse(req.query.clone()).map_err(ApiError::from)
}

/// `GET /nodes`: paginated; `limit` has no maximum (upstream): a page longer than
/// [`stream::PAGE`] is streamed.
pub async fn find(app: &App, req: &Request) -> Result<Response, ApiError> {
    let q = parse_query(req)?;
    let limit = q.limit.unwrap_or(50);
    let offset = q.offset.unwrap_or(0);
    let first = FindOptions {
        limit: Some(limit.min(stream::PAGE)),
        offset,
        ..Default::default()
    };
    // The first page and the count before the status goes out: their errors are statuses.
    let (docs, total) = futures::try_join!(
        app.store.find_nodes_json(&q.filter, &first),
        app.store.count_nodes(&q.filter)
    )?;
    let suffix = format!(",\"total\":{total},\"limit\":{limit},\"offset\":{offset}}}");
    if limit <= stream::PAGE || (docs.len() as u64) < stream::PAGE {
        let mut body = String::with_capacity(64 + docs.iter().map(|d| d.len() + 1).sum::<usize>());
        body.push_str("{\"items\":");
        push_json_array(&mut body, docs);
        body.push_str(&suffix);
        return ok_json_text(body);
    }
    let store = app.store.clone();
    Ok(stream::json_response(move |mut w| async move {
        if w.raw("{\"items\":[").await.is_err() {
            return;
        }
        match stream_nodes(store.as_ref(), &q.filter, Some(limit), docs, &mut w).await {
            Ok(()) => {
                if w.raw("]").await.is_ok() && w.raw(&suffix).await.is_ok() {
                    let _ = w.finish().await;
                }
            }
            Err(StreamError::Store(e)) => w.abort(e).await,
            Err(StreamError::Gone) => {}
        }
    }))
}

/// Why streaming nodes stopped.
enum StreamError {
    Store(String),
    Gone,
}

impl From<stream::Stop> for StreamError {
    fn from(_: stream::Stop) -> StreamError {
        StreamError::Gone
    }
}

/// Writes `first` (the first page, read with the request's offset), then the following pages
/// after the last id seen (keyset paging in id order), until `limit` nodes or the end.
async fn stream_nodes(
    store: &dyn kernelci::store::NodeStore,
    filter: &kernelci::query::Filter,
    limit: Option<u64>,
    first: Vec<String>,
    w: &mut stream::JsonWriter,
) -> Result<(), StreamError> {
    let mut page = first;
    loop {
        let full = page.len() as u64 == stream::PAGE;
        let last = page.last().map(|d| {
            stream::node_id(d).ok_or_else(|| StreamError::Store("a node without an id".into()))
        });
        for doc in page {
            w.item(&doc).await?;
        }
        let left = limit.map_or(u64::MAX, |l| l.saturating_sub(w.items()));
        let Some(last) = last else {
            return Ok(());
        };
        if !full || left == 0 {
            return Ok(());
        }
        let opts = FindOptions {
            limit: Some(left.min(stream::PAGE)),
            after: Some(Cursor {
                key: Value::Null,
                id: last?,
            }),
            ..Default::default()
        };
        page = store
            .find_nodes_json(filter, &opts)
            .await
            .map_err(|e| StreamError::Store(e.to_string()))?;
    }
}

/// `GET /nodes/fast`: a bare array; `limit`/`offset` page, no default limit: more than
/// [`stream::PAGE`] nodes are streamed.
pub async fn find_fast(app: &App, req: &Request) -> Result<Response, ApiError> {
    let q = Query::parse(req.query.clone()).map_err(|e| match e {
        QueryError::InvalidPagination { value, .. } => {
            ApiError::bad_request(format!("invalid literal for int() with base 10: '{value}'"))
        }
        other => ApiError::from(other),
    })?;
    let opts = FindOptions {
        limit: Some(q.limit.map_or(stream::PAGE, |l| l.min(stream::PAGE))),
        offset: q.offset.unwrap_or(0),
        ..Default::default()
    };
    let docs = app
        .store
        .find_nodes_json(&q.filter, &opts)
        .await
        .map_err(|e| match e {
            StoreError::Timeout(_) => ApiError::new(
                warp::http::StatusCode::GATEWAY_TIMEOUT,
                "Timeout while fetching nodes: ",
            ),
            other => other.into(),
        })?;
    if (docs.len() as u64) < stream::PAGE || q.limit.is_some_and(|l| l <= stream::PAGE) {
        // All of it is here: one piece, built from the documents as they are consumed.
        let mut body = String::with_capacity(2 + docs.iter().map(|d| d.len() + 1).sum::<usize>());
        push_json_array(&mut body, docs);
        return ok_json_text(body);
    }
    let store = app.store.clone();
    Ok(stream::json_response(move |mut w| async move {
        if w.raw("[").await.is_err() {
            return;
        }
        match stream_nodes(store.as_ref(), &q.filter, q.limit, docs, &mut w).await {
            Ok(()) => {
                if w.raw("]").await.is_ok() {
                    let _ = w.finish().await;
                }
            }
            Err(StreamError::Store(e)) => w.abort(e).await,
            Err(StreamError::Gone) => {}
        }
    }))
}

/// Appends `[doc,doc,...]`, consuming the documents (JSON texts from the store).
fn push_json_array(out: &mut String, docs: Vec<String>) {
    out.push('[');
    for (i, d) in docs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&d);
    }
    out.push(']');
}

/// `GET /count`: `limit`/`offset` are ignored (upstream counted them as fields).
pub async fn count(app: &App, req: &Request) -> Result<Response, ApiError> {
    let q = parse_query(req)?;
    ok(json!(app.store.count_nodes(&q.filter).await?))
}

async fn check_groups(app: &App, groups: &[String]) -> Result<(), ApiError> {
    for g in groups {
        if app.store.get_group_by_name(g).await?.is_none() {
            return Err(ApiError::bad_request(format!(
                "User group does not exist with name: {g}"
            )));
        }
    }
    Ok(())
}

/// `POST /node`.
pub async fn create(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    let user = app.auth.user(req).await?;
    let given_id = body
        .get("id")
        .or_else(|| body.get("_id"))
        .filter(|v| !v.is_null())
        .cloned();
    let mut node = node_body(body, &[Value::from("body")])?;
    node.coerce_version_numbers();
    node.validate()?;
    if let Some(parent) = node.parent
        && app.store.get_node(parent).await?.is_none()
    {
        return Err(ApiError::not_found(format!(
            "Parent not found with id: {parent}"
        )));
    }
    check_groups(app, &node.user_groups).await?;
    node.owner = Some(user.username.clone());
    if let Some(id) = given_id {
        let shown = id
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| id.to_string());
        return Err(ApiError::bad_request(format!(
            "Object cannot be created with id: {shown}"
        )));
    }
    let stored = app
        .store
        .insert_nodes(vec![node], EventMode::Publish)
        .await?;
    let node = stored
        .nodes
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("insert returned nothing"))?;
    app.metrics
        .nodes_created
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    notify_latest(app).await;
    ok(node.to_value())
}

/// Wakes `node` listeners after a write that appended events.
async fn notify_latest(app: &App) {
    app.pubsub.wake(kernelci::events::NODE_CHANNEL, 0).await;
    app.metrics
        .events_published
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

async fn editable(app: &App, req: &Request, id: &str) -> Result<(User, Node), ApiError> {
    let user = app.auth.user(req).await?;
    let id = object_id(id)?;
    let stored = app
        .store
        .get_node(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Node not found with id: {id}")))?;
    if !can_edit(&user, &stored) {
        return Err(edit_denied());
    }
    Ok((user, stored))
}

fn event_mode(req: &Request) -> Result<EventMode, ApiError> {
    Ok(if req.flag("noevent")? {
        EventMode::Silent
    } else {
        EventMode::Publish
    })
}

/// `PUT /node/{id}`: full replacement with the transition rule.
pub async fn replace(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let body = req.json()?;
    let (_user, stored) = editable(app, req, id).await?;
    // Upstream reset an omitted `created` to now; the creation time is kept instead.
    let keep_created = body.get("created").is_none_or(Value::is_null);
    let mut node = node_body(body, &[Value::from("body")])?;
    if keep_created {
        node.created = stored.created;
    }
    let id = stored.id;
    node.id = id;
    if node.parent.is_some() && node.parent == id {
        return Err(ApiError::bad_request(
            "Parent cannot be the same as the object",
        ));
    }
    node.coerce_version_numbers();
    node.validate()?;
    node.processed_by_kcidb_bridge = node.processed_by_kcidb_bridge
        && !stored.processed_by_kcidb_bridge
        && node.state == stored.state;
    let rule = UpdateRule {
        event: event_mode(req)?,
        ..UpdateRule::PUT
    };
    let upd = app.store.update_node(node, rule).await?;
    if upd.event.is_some() {
        notify_latest(app).await;
    }
    ok(upd.node.to_value())
}

/// `PATCH /node/{id}`.
pub async fn patch(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let body = req.json()?;
    let (_user, stored) = editable(app, req, id).await?;
    let mut body = body;
    let errors = input::check_patch_input(&mut body);
    if !errors.is_empty() {
        return Err(ApiError::unprocessable_input(
            &[Value::from("body")],
            &errors,
        ));
    }
    let patch: NodePatch = input::patch_from_input(body)?;
    if patch.is_empty() {
        return Err(ApiError::bad_request("No fields to update"));
    }
    let id = stored
        .id
        .ok_or_else(|| ApiError::internal("stored node without id"))?;
    let upd = app
        .store
        .patch_node(id, &patch, event_mode(req)?)
        .await
        .map_err(|e| match e {
            // Upstream's PATCH text leaked the enum repr (`StateValues.RUNNING`); the state is
            // named as users write it, as PUT does.
            StoreError::Model(e @ kernelci::models::ModelError::Transition { .. }) => {
                ApiError::bad_request(e.to_string())
            }
            other => other.into(),
        })?;
    if upd.event.is_some() {
        notify_latest(app).await;
    }
    ok(upd.node.to_value())
}

/// `PUT /batch/nodeset`.
pub async fn batch_set(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    let user = app.auth.user(req).await?;
    let obj = crate::http::json_object(&body)?;
    let nodes = match obj.get("nodes") {
        Some(Value::Array(a)) => a.clone(),
        Some(other) => {
            return Err(ApiError::validation(
                "body",
                "nodes",
                "list_type",
                "Input should be a valid list",
                other,
            ));
        }
        None => return Err(ApiError::missing("body", "nodes")),
    };
    let field = match obj.get("field") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::validation(
                "body",
                "field",
                "string_type",
                "Input should be a valid string",
                other,
            ));
        }
        None => return Err(ApiError::missing("body", "field")),
    };
    let value = match obj.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::validation(
                "body",
                "value",
                "string_type",
                "Input should be a valid string",
                other,
            ));
        }
        None => return Err(ApiError::missing("body", "value")),
    };
    let typed = match value.as_str() {
        "true" | "True" => Value::Bool(true),
        "false" | "False" => Value::Bool(false),
        other => Value::String(other.to_owned()),
    };
    // The editable nodes are set in one store write (one transaction), not one per node; an
    // error (a missing node, a bad id) still stops the request with the nodes before it set,
    // as upstream.
    let mut editable = Vec::with_capacity(nodes.len());
    let walk: Result<(), ApiError> = async {
        for (i, raw) in nodes.iter().enumerate() {
            let Some(s) = raw.as_str() else {
                return Err(ApiError::validation(
                    "body",
                    &format!("nodes.{i}"),
                    "string_type",
                    "Input should be a valid string",
                    raw,
                ));
            };
            let id = object_id(s)?;
            let node = app
                .store
                .get_node(id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("Node not found with id: {id}")))?;
            if !can_edit(&user, &node) {
                continue;
            }
            if field != "processed_by_kcidb_bridge" {
                return Err(ApiError::bad_request("Field not supported"));
            }
            editable.push(id);
        }
        Ok(())
    }
    .await;
    let updated = if editable.is_empty() {
        0
    } else {
        app.store.set_field(&editable, &field, typed).await?
    };
    walk?;
    ok(json!(updated))
}

struct Flat {
    nodes: Vec<Node>,
}

fn flatten(
    h: &Value,
    parent: Option<ObjectId>,
    loc: &[Value],
    out: &mut Flat,
) -> Result<(), ApiError> {
    let at = |key: &str| {
        let mut l = loc.to_vec();
        l.push(Value::from(key));
        l
    };
    let obj = h.as_object().ok_or_else(|| {
        ApiError::unprocessable(json!([{
            "type": "model_type", "loc": loc, "msg": "Input should be a valid dictionary or instance of Hierarchy",
            "input": h, "ctx": {"class_name": "Hierarchy"},
        }]))
    })?;
    let missing = |key: &str| {
        ApiError::unprocessable(json!([{
            "type": "missing", "loc": at(key), "msg": "Field required", "input": h,
        }]))
    };
    let node_v = obj.get("node").ok_or_else(|| missing("node"))?;
    let children = match obj.get("child_nodes") {
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(ApiError::unprocessable(json!([{
                "type": "list_type", "loc": at("child_nodes"), "msg": "Input should be a valid list",
                "input": other,
            }])));
        }
        None => return Err(missing("child_nodes")),
    };
    let mut node = node_body(node_v.clone(), &at("node"))?;
    if parent.is_some() {
        node.parent = parent;
    }
    if node.id.is_none() {
        node.id = Some(ObjectId::new());
    }
    let id = node.id;
    out.nodes.push(node);
    for (i, c) in children.iter().enumerate() {
        let mut child_loc = at("child_nodes");
        child_loc.push(Value::from(i));
        flatten(c, id, &child_loc, out)?;
    }
    Ok(())
}

/// `PUT /nodes/{id}`: a result hierarchy; one `updated` event for the root.
pub async fn hierarchy(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let mut body = req.json()?;
    let (user, stored_root) = editable(app, req, id).await?;
    if let Some(n) = body.get_mut("node").and_then(Value::as_object_mut) {
        n.insert("id".into(), Value::String(id.to_owned()));
        n.remove("_id");
    }
    let mut flat = Flat { nodes: Vec::new() };
    flatten(&body, None, &[Value::from("body")], &mut flat)?;
    for node in &mut flat.nodes {
        if node.owner.as_deref().is_none_or(str::is_empty) {
            node.owner = Some(user.username.clone());
        }
        node.submitter.clone_from(&stored_root.submitter);
        node.treeid.clone_from(&stored_root.treeid);
        node.coerce_version_numbers();
        node.validate()?;
    }
    // The root obeys the state machine like `PUT /node/{id}` (upstream skipped the check here).
    if let Some(root) = flat.nodes.first() {
        stored_root.state.check_transition(root.state)?;
    }
    let written = app
        .store
        .write_hierarchy(flat.nodes, EventMode::Publish)
        .await?;
    notify_latest(app).await;
    ok(Value::Array(
        written.nodes.iter().map(Node::to_value).collect(),
    ))
}
