//! Files of OpenAI's Files API, in JetStream's object store: uploaded batch inputs and the
//! results files of batches, each under `<tenant>.<file id>`, so that a tenant's file id
//! names nothing of another tenant's (another tenant's id is simply not found).

use std::collections::HashMap;

use async_nats::jetstream::object_store::{
    GetErrorKind, InfoErrorKind, ObjectInfo, ObjectMetadata, ObjectStore,
};
use futures::StreamExt;
use llmq_schemas::openai::batch::FileObject;
use llmq_schemas::{Subjects, Tenant};
use tokio::io::AsyncRead;

use crate::api_error::ApiError;

const FILENAME: &str = "filename";
const PURPOSE: &str = "purpose";

/// The files bucket, as one tenant's requests see it.
pub(crate) struct Files {
    store: ObjectStore,
}

impl Files {
    pub(crate) async fn open(
        js: &async_nats::jetstream::Context,
        subjects: &Subjects,
    ) -> Result<Files, ApiError> {
        let bucket = subjects.files_bucket();
        let store = js.get_object_store(&bucket).await.map_err(|err| {
            ApiError::unavailable(format!("the files bucket {bucket} is not available (is a worker of this version running?): {err}"))
        })?;
        Ok(Files { store })
    }

    /// Stores `data` as a new file of `tenant`'s.
    pub(crate) async fn put(
        &self,
        tenant: &Tenant,
        filename: &str,
        purpose: &str,
        data: &mut (impl AsyncRead + Unpin),
    ) -> Result<FileObject, ApiError> {
        let id = format!("file-{}", uuid::Uuid::new_v4().simple());
        let metadata = HashMap::from([
            (FILENAME.to_owned(), filename.to_owned()),
            (PURPOSE.to_owned(), purpose.to_owned()),
        ]);
        let meta = ObjectMetadata {
            name: Subjects::file_object(tenant, &id),
            metadata,
            ..Default::default()
        };
        let info = self
            .store
            .put(meta, data)
            .await
            .map_err(|err| ApiError::unavailable(format!("cannot store the file: {err}")))?;
        Ok(file_object(&id, &info))
    }

    /// The file's object, if `tenant` has a file by that id.
    pub(crate) async fn info(&self, tenant: &Tenant, id: &str) -> Result<FileObject, ApiError> {
        match self.store.info(Subjects::file_object(tenant, id)).await {
            Ok(info) if !info.deleted => Ok(file_object(id, &info)),
            Ok(_) => Err(not_found(id)),
            Err(err)
                if matches!(
                    err.kind(),
                    InfoErrorKind::NotFound | InfoErrorKind::InvalidName
                ) =>
            {
                Err(not_found(id))
            }
            Err(err) => Err(ApiError::unavailable(format!(
                "cannot read file {id}: {err}"
            ))),
        }
    }

    /// The file's bytes, as a reader.
    pub(crate) async fn open_content(
        &self,
        tenant: &Tenant,
        id: &str,
    ) -> Result<async_nats::jetstream::object_store::Object, ApiError> {
        match self.store.get(Subjects::file_object(tenant, id)).await {
            Ok(object) => Ok(object),
            Err(err)
                if matches!(
                    err.kind(),
                    GetErrorKind::NotFound | GetErrorKind::InvalidName
                ) =>
            {
                Err(not_found(id))
            }
            Err(err) => Err(ApiError::unavailable(format!(
                "cannot read file {id}: {err}"
            ))),
        }
    }

    pub(crate) async fn delete(&self, tenant: &Tenant, id: &str) -> Result<(), ApiError> {
        self.info(tenant, id).await?;
        self.store
            .delete(Subjects::file_object(tenant, id))
            .await
            .map_err(|err| ApiError::unavailable(format!("cannot delete file {id}: {err}")))
    }

    /// `tenant`'s files, newest first.
    pub(crate) async fn list(&self, tenant: &Tenant) -> Result<Vec<FileObject>, ApiError> {
        let prefix = format!("{tenant}.");
        let mut list = self
            .store
            .list()
            .await
            .map_err(|err| ApiError::unavailable(format!("cannot list files: {err}")))?;
        let mut files = Vec::new();
        while let Some(info) = list.next().await {
            let info =
                info.map_err(|err| ApiError::unavailable(format!("cannot list files: {err}")))?;
            if let Some(id) = info.name.strip_prefix(&prefix)
                && !info.deleted
            {
                files.push(file_object(id, &info));
            }
        }
        files.sort_by_key(|f| std::cmp::Reverse(f.created_at));
        Ok(files)
    }
}

fn file_object(id: &str, info: &ObjectInfo) -> FileObject {
    let get = |key: &str| info.metadata.get(key).cloned().unwrap_or_default();
    FileObject {
        id: id.to_owned(),
        object: "file".into(),
        bytes: info.size as u64,
        created_at: info.modified.map_or(0, |at| at.unix_timestamp()),
        filename: get(FILENAME),
        purpose: get(PURPOSE),
        status: "processed".into(),
    }
}

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        format!("No such File object: {id}"),
    )
}
