"""REST routes for recordings: `/api/recordings` (GET list, POST create), `/api/recordings/{name}`
(GET, DELETE), `/api/recordings/{name}/stop` (POST), `/api/recordings/{name}/runs/{run}/bundle` (GET:
the bundle file).

Rule: the handlers only translate. Changing jobs is the editor's, reading them the viewer's; a caller
scoped to namespaces sees and makes only jobs within its namespaces (a job it creates without
namespaces gets the caller's), and downloads only their bundles. A bad job is a 400 naming the field,
an unknown one a 404, an existing name a 409 — never a 500.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from wiretide.common.auth import NamespaceScope, Principal, Role, principal_of
from wiretide.common.recording import InvalidJob, RecordingJob, check_name
from wiretide.gateway.recording.manager import RecordingManager

MAX_BODY_BYTES: Final = 64 * 1024
HOP_HEADER: Final = "x-wiretide-replica-hop"  # a request one replica passed to another: not passed on


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status_code=status, media_type="application/json"
    )


def visible(job_namespaces: tuple[str, ...] | list[str], scope: NamespaceScope) -> bool:
    """A scoped caller sees a job only when all of its namespaces are the caller's."""
    if scope.namespaces is None:
        return True
    return bool(job_namespaces) and set(job_namespaces) <= scope.namespaces


async def _from_replica(request: Request, url: str, doc: dict[str, Any]) -> Response:
    """A bundle another gateway replica keeps, streamed through this one (the caller's credentials
    are passed on: that replica checks them again)."""
    import httpx

    headers = {HOP_HEADER: "1"}
    if auth := request.headers.get("authorization"):
        headers["authorization"] = auth
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, read=300.0))
    target = f"{url}/api/recordings/{doc['job']}/runs/{doc['id']}/bundle"
    try:
        answer = await client.send(client.build_request("GET", target, headers=headers), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        where = f"replica {doc.get('replica')!r} keeps this bundle and is unreachable"
        return _json({"error": f"{where}: {exc}"}, 502)
    if answer.status_code != 200:
        body = await answer.aread()
        await answer.aclose()
        await client.aclose()
        return Response(body, status_code=answer.status_code, media_type=answer.headers.get("content-type"))

    async def close() -> None:
        await answer.aclose()
        await client.aclose()

    return StreamingResponse(
        answer.aiter_raw(1 << 20),
        media_type="application/gzip",
        headers={"content-disposition": answer.headers.get("content-disposition", "")},
        background=BackgroundTask(close),
    )


def routes(manager_of: Any) -> list[BaseRoute]:
    """`manager_of()` is the running RecordingManager (or None while the gateway starts)."""

    def manager() -> RecordingManager:
        m = manager_of()
        if m is None or m.job_store is None:
            raise ConnectionError("recordings are not ready yet")
        assert isinstance(m, RecordingManager)
        return m

    def guarded(handler: Any, role: Role) -> Any:
        async def endpoint(request: Request) -> Response:
            principal = principal_of(request.scope)
            principal.require(role)  # PermissionDenied: the app answers 403
            try:
                return await handler(request, principal)  # type: ignore[no-any-return]
            except InvalidJob as exc:
                return _json({"error": str(exc)}, 400)
            except LookupError as exc:
                return _json({"error": str(exc)}, 404)
            except FileExistsError as exc:
                return _json({"error": str(exc)}, 409)
            except ConnectionError as exc:
                return _json({"error": str(exc)}, 503)

        return endpoint

    def job_named(m: RecordingManager, name: str, principal: Principal) -> RecordingJob:
        check_name(name)
        job = m.jobs.get(name)
        if job is None or not visible(job.namespaces, principal.scope):
            raise LookupError(f"no recording {name!r}")
        return job

    async def list_jobs(request: Request, principal: Principal) -> Response:
        m = manager()
        scope = principal.scope
        jobs = [
            m.job_doc(j)
            for j in sorted(m.jobs.values(), key=lambda j: j.name)
            if visible(j.namespaces, scope)
        ]
        others = [r for r in m.orphan_runs() if visible(r["namespaces"], scope)]
        return _json({"recordings": jobs, "runs": others, "status": m.health()})

    async def create_job(request: Request, principal: Principal) -> Response:
        m = manager()
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise InvalidJob(f"body larger than {MAX_BODY_BYTES // 1024} KiB")
        try:
            doc = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            raise InvalidJob("body must be JSON: a recording job") from None
        if not isinstance(doc, dict):
            raise InvalidJob("body must be a JSON object")
        doc = {k: v for k, v in doc.items() if k not in ("created_ns", "created_by", "origin", "stopped")}
        job = RecordingJob.from_dict(doc)
        scope = principal.scope
        if scope.namespaces is not None:
            if not job.namespaces:
                job = replace(job, namespaces=tuple(sorted(scope.namespaces)))
            elif not set(job.namespaces) <= scope.namespaces:
                outside = sorted(set(job.namespaces) - scope.namespaces)
                return _json({"error": f"namespaces outside your scope: {', '.join(outside)}"}, 403)
        if job.name in m.jobs:
            raise FileExistsError(f"a recording {job.name!r} exists (stop or delete it first)")
        job = replace(job, created_ns=time.time_ns(), created_by=principal.subject, origin="api")
        stored = await m.put_job(job)
        return _json(m.job_doc(stored), 201)

    async def get_job(request: Request, principal: Principal) -> Response:
        m = manager()
        return _json(m.job_doc(job_named(m, request.path_params["name"], principal)))

    async def stop_job(request: Request, principal: Principal) -> Response:
        m = manager()
        job = job_named(m, request.path_params["name"], principal)
        stored = await m.stop_job(job.name)
        if stored is None:
            raise LookupError(f"no recording {job.name!r}")
        return _json(m.job_doc(stored))

    async def delete_job(request: Request, principal: Principal) -> Response:
        m = manager()
        job = job_named(m, request.path_params["name"], principal)
        await m.delete_job(job.name)
        return _json({"deleted": job.name})

    async def bundle(request: Request, principal: Principal) -> Response:
        m = manager()
        name, rid = request.path_params["name"], request.path_params["run"]
        doc = m.all_runs().get(rid)
        if doc is None or doc["job"] != name or not visible(doc["namespaces"], principal.scope):
            raise LookupError(f"no bundle for run {rid[:100]!r} of {name[:100]!r}")
        if not doc.get("bundle"):
            raise LookupError(f"run {rid!r} has no bundle ({doc['state']})")
        local = m.runs.get(rid)
        if local is not None and local.bundle and doc.get("replica") == m.replica:
            path = Path(local.bundle)
            if not await asyncio.to_thread(path.is_file):
                raise LookupError(f"the bundle of {rid!r} is no longer on this node")
            return FileResponse(path, media_type="application/gzip", filename=path.name)
        if request.headers.get(HOP_HEADER) or not doc.get("url"):
            raise LookupError(f"the bundle of {rid!r} is kept by replica {doc.get('replica')!r}")
        return await _from_replica(request, str(doc["url"]), doc)

    return [
        Route("/api/recordings", guarded(list_jobs, Role.VIEWER), methods=["GET"]),
        Route("/api/recordings", guarded(create_job, Role.EDITOR), methods=["POST"]),
        Route("/api/recordings/{name}", guarded(get_job, Role.VIEWER), methods=["GET"]),
        Route("/api/recordings/{name}", guarded(delete_job, Role.EDITOR), methods=["DELETE"]),
        Route("/api/recordings/{name}/stop", guarded(stop_job, Role.EDITOR), methods=["POST"]),
        Route("/api/recordings/{name}/runs/{run}/bundle", guarded(bundle, Role.VIEWER), methods=["GET"]),
    ]


def openapi_paths() -> dict[str, Any]:
    """These routes in the OpenAPI document (docs/recording.md describes a job's fields)."""
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    err = {
        "description": "refused",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    obj = {"application/json": {"schema": {"type": "object"}}}

    def op(summary: str, ok: str, *errors: str, body: bool = False, status: str = "200") -> dict[str, Any]:
        doc: dict[str, Any] = {
            "summary": summary,
            "responses": {status: {"description": ok, "content": obj}, **{e: err for e in errors}},
        }
        if body:
            doc["requestBody"] = {"required": True, "content": obj}
        return doc

    return {
        "/api/recordings": {
            "get": op(
                "Recording jobs with their runs, runs without a job, this node's limits", "jobs", "503"
            ),
            "post": op(
                "Start, schedule or arm a recording job (editor)",
                "the stored job",
                "400",
                "403",
                "409",
                body=True,
                status="201",
            ),
        },
        "/api/recordings/{name}": {
            "parameters": name,
            "get": op("A job, its state and runs", "the job", "404"),
            "delete": op("Delete a job (its bundles stay)", "deleted", "404"),
        },
        "/api/recordings/{name}/stop": {
            "parameters": name,
            "post": op("Stop a job: its current run ends now and becomes a bundle", "the job", "404"),
        },
        "/api/recordings/{name}/runs/{run}/bundle": {
            "parameters": [
                *name,
                {"name": "run", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "get": {
                "summary": "A run's bundle (tar.gz), from whichever gateway replica keeps it",
                "responses": {
                    "200": {"description": "the bundle", "content": {"application/gzip": {}}},
                    "404": err,
                    "502": err,
                },
            },
        },
    }
