//! The two migration trees and what the database itself enforces: both backends have
//! the same tables and columns; the audit trail refuses edits; on Postgres, row-level
//! security keeps a tenant-scoped transaction to its tenant, and a connection that
//! names no tenant sees none.

use std::collections::BTreeSet;

use corral_host::db::{self, Db};
use corral_host::{on_pool, on_tx};
use sqlx::Connection;

/// A fresh Postgres database (dropped at the end) and its URL.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    async fn create() -> PgDatabase {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL is not set; run ./scripts/test, which finds Postgres");
        let name = format!("corral_schema_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to Postgres");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        PgDatabase { admin_url, name }
    }

    fn url(&self) -> String {
        let base = self
            .admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&self.admin_url);
        format!("{base}/{}", self.name)
    }

    async fn drop(self) {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut conn)
            .await;
    }
}

async fn columns(db: &Db) -> BTreeSet<(String, String)> {
    let rows: Vec<(String, String)> = match db {
        Db::Postgres(pool) => sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%'",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        Db::Sqlite(sqlite) => sqlx::query_as(
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE '\\_sqlx%' ESCAPE '\\' AND m.name NOT LIKE 'sqlite%'",
        )
        .fetch_all(&sqlite.pool)
        .await
        .unwrap(),
    };
    rows.into_iter().collect()
}

#[tokio::test]
async fn both_migration_trees_produce_the_same_tables_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Db::open_sqlite(&dir.path().join("corral.db"))
        .await
        .unwrap();
    let pg_db = PgDatabase::create().await;
    let postgres = Db::connect(&pg_db.url(), 2).await.unwrap();

    // Where several hosts share Postgres, they admit invocations through shared
    // leases and rate buckets; an SQLite file has one host, which keeps them in memory.
    const POSTGRES_ONLY: [&str; 3] = ["concurrency_scopes", "concurrency_leases", "rate_buckets"];
    let (a, mut b) = (columns(&sqlite).await, columns(&postgres).await);
    assert!(
        POSTGRES_ONLY
            .iter()
            .all(|t| b.iter().any(|(table, _)| table == t)),
        "{b:?}"
    );
    b.retain(|(table, _)| !POSTGRES_ONLY.contains(&table.as_str()));
    assert!(a.len() > 50, "the schema has its tables: {a:?}");
    assert_eq!(
        a.symmetric_difference(&b).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "columns only on one backend"
    );
    postgres.close().await;
    pg_db.drop().await;
}

async fn insert_tenant(db: &Db, name: &str) -> String {
    let id = db::new_id();
    on_pool!(db, pool => sqlx::query("INSERT INTO tenants (id, name, is_operator, created_at) VALUES ($1, $2, FALSE, $3)")
        .bind(&id)
        .bind(name)
        .bind(db::now())
        .execute(pool)
        .await
        .map(|_| ()))
    .unwrap();
    id
}

async fn insert_event(db: &Db, tenant: &str) -> String {
    let id = db::new_id();
    let mut tx = db.begin(tenant).await.unwrap();
    on_tx!(&mut tx, conn => sqlx::query(
        "INSERT INTO audit_events (id, tenant_id, occurred_at, action, resource_type, result) VALUES ($1, $2, $3, 'x.y', 'x', 'ok')")
        .bind(&id)
        .bind(tenant)
        .bind(db::now())
        .execute(conn)
        .await
        .map(|_| ()))
    .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn the_audit_trail_refuses_edits(db: &Db) {
    let tenant = insert_tenant(db, "t").await;
    let id = insert_event(db, &tenant).await;
    // In the event's own tenant, where row-level security lets the statement see it.
    let mut tx = db.begin(tenant.as_str()).await.unwrap();
    let update = on_tx!(&mut tx, conn => sqlx::query("UPDATE audit_events SET action = 'rewritten' WHERE id = $1")
        .bind(&id).execute(conn).await.map(|_| ()));
    assert!(update.is_err(), "an audit event was modified");
    drop(tx);
    let mut tx = db.begin(tenant.as_str()).await.unwrap();
    let delete = on_tx!(&mut tx, conn => sqlx::query("DELETE FROM audit_events WHERE id = $1")
        .bind(&id).execute(conn).await.map(|_| ()));
    assert!(delete.is_err(), "an audit event was deleted");
}

#[tokio::test]
async fn the_audit_trail_is_append_only_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("corral.db"))
        .await
        .unwrap();
    the_audit_trail_refuses_edits(&db).await;
}

#[tokio::test]
async fn the_audit_trail_is_append_only_on_postgres() {
    let pg_db = PgDatabase::create().await;
    let db = Db::connect(&pg_db.url(), 2).await.unwrap();
    the_audit_trail_refuses_edits(&db).await;
    db.close().await;
    pg_db.drop().await;
}

#[tokio::test]
async fn row_level_security_confines_a_scoped_transaction_to_its_tenant() {
    let pg_db = PgDatabase::create().await;
    let db = Db::connect(&pg_db.url(), 2).await.unwrap();
    let Db::Postgres(pool) = &db else {
        unreachable!()
    };
    let role: (String,) = sqlx::query_as("SELECT current_user::text")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        role.0, "corral_app",
        "the host's connections act as corral_app"
    );

    let a = insert_tenant(&db, "a").await;
    let b = insert_tenant(&db, "b").await;
    insert_event(&db, &a).await;
    insert_event(&db, &b).await;

    let mut tx = db.begin(a.as_str()).await.unwrap();
    let db::Tx::Postgres(inner) = &mut tx else {
        unreachable!()
    };
    let visible: Vec<(String,)> = sqlx::query_as("SELECT tenant_id FROM audit_events")
        .fetch_all(&mut **inner)
        .await
        .unwrap();
    assert_eq!(
        visible,
        vec![(a.clone(),)],
        "only tenant a's rows are visible"
    );
    let foreign_write = sqlx::query(
        "INSERT INTO audit_events (id, tenant_id, occurred_at, action, resource_type, result) VALUES ($1, $2, now(), 'x.y', 'x', 'ok')",
    )
    .bind(db::new_id())
    .bind(&b)
    .execute(&mut **inner)
    .await;
    assert!(
        foreign_write.is_err(),
        "a scoped transaction wrote another tenant's row"
    );
    drop(tx);

    // No tenant named: nothing visible, nothing writable (fails closed).
    let unscoped: Vec<(String,)> = sqlx::query_as("SELECT tenant_id FROM audit_events")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(unscoped, vec![], "a connection without a tenant saw rows");
    let unscoped_write = sqlx::query(
        "INSERT INTO audit_events (id, tenant_id, occurred_at, action, resource_type, result) VALUES ($1, $2, now(), 'x.y', 'x', 'ok')",
    )
    .bind(db::new_id())
    .bind(&a)
    .execute(pool)
    .await;
    assert!(
        unscoped_write.is_err(),
        "a connection without a tenant wrote a row"
    );
    // A tenant that does not exist, or the empty string, is no way around it either.
    for nobody in ["", "no-such-tenant"] {
        let mut tx = db.begin(nobody).await.unwrap();
        let db::Tx::Postgres(inner) = &mut tx else {
            unreachable!()
        };
        let seen: (i64,) = sqlx::query_as("SELECT count(*) FROM audit_events")
            .fetch_one(&mut **inner)
            .await
            .unwrap();
        assert_eq!(seen.0, 0, "tenant {nobody:?} saw rows");
    }
    // A named operator-wide path sees every tenant's rows.
    let mut tx = db.begin(db::Wide::Housekeeping).await.unwrap();
    let db::Tx::Postgres(inner) = &mut tx else {
        unreachable!()
    };
    let all: (i64,) = sqlx::query_as("SELECT count(*) FROM audit_events")
        .fetch_one(&mut **inner)
        .await
        .unwrap();
    assert_eq!(all.0, 2);
    drop(tx);
    db.close().await;
    pg_db.drop().await;
}
