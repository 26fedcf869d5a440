// `#/workflows`: every workflow (latest versions), with links to edit, run and see its runs.
import { useCallback, useEffect, useState } from "react";
import { api, type Page } from "../lib/api";
import { navigate } from "../lib/router";
import type { Workflow } from "../lib/types";
import {
  ConfirmDelete,
  EmptyState,
  ErrorNote,
  Pager,
  RelativeTime,
  errorMessage,
  navigateWithQuery,
  pageParam,
  useHashQuery,
} from "./common";
import "./lists.css";

const PAGE_SIZE = 25;

export function WorkflowList() {
  const page = pageParam(useHashQuery());
  const [data, setData] = useState<Page<Workflow> | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      setData(await api<Page<Workflow>>(`/api/v1/workflows?page=${page}&page_size=${PAGE_SIZE}`));
      setError(null);
    } catch (caught) {
      setError(errorMessage(caught));
    }
  }, [page]);

  useEffect(() => {
    load();
  }, [load]);

  const remove = async (workflow: Workflow) => {
    try {
      await api(`/api/v1/workflows/${workflow.id}`, { method: "DELETE" });
    } catch (caught) {
      setError(`Could not delete “${workflow.name}”: ${errorMessage(caught)}`);
      return;
    }
    // The last row of a later page gone: show the page before.
    if (data && data.items.length === 1 && page > 1) goToPage(page - 1);
    else await load();
  };

  return (
    <div className="page">
      <header className="page-header">
        <div>
          <h1>Workflows</h1>
          <p className="muted">
            Workflow definitions, latest version of each. Click a row to open it in the editor.
          </p>
        </div>
        <button className="primary" data-testid="new-workflow" onClick={() => navigate("/workflows/new")}>
          + New workflow
        </button>
      </header>
      <ErrorNote error={error} onRetry={load} />
      {data === null ? (
        !error && <p className="muted loading">Loading workflows…</p>
      ) : data.total === 0 ? (
        <EmptyState title="No workflows yet">
          <p>
            A workflow is a graph of nodes: create one with <strong>New workflow</strong> and
            draw it in the editor, or POST a JSON or YAML definition to{" "}
            <code>/api/v1/workflows</code>.
          </p>
          <button className="primary" onClick={() => navigate("/workflows/new")}>
            + New workflow
          </button>
        </EmptyState>
      ) : data.items.length === 0 ? (
        <EmptyState title={`Page ${page} is empty`}>
          <p>There are {data.total} workflows, on fewer pages than that.</p>
          <button onClick={() => goToPage(1)}>Go to the first page</button>
        </EmptyState>
      ) : (
        <>
          <div className="table-wrap">
            <table className="data" data-testid="workflow-list">
              <thead>
                <tr>
                  <th>Name</th>
                  <th className="num">Version</th>
                  <th>Updated</th>
                  <th className="actions-col">
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {data.items.map((workflow) => (
                  <tr
                    key={workflow.id}
                    className="clickable"
                    data-testid={`workflow-row-${workflow.id}`}
                    onClick={() => navigate(`/workflows/${workflow.id}`)}
                  >
                    <td>
                      <a
                        className="row-title"
                        href={`#/workflows/${workflow.id}`}
                        onClick={(event) => event.stopPropagation()}
                      >
                        {workflow.name}
                      </a>
                      {workflow.description && (
                        <div className="muted ellipsis" title={workflow.description}>
                          {workflow.description}
                        </div>
                      )}
                    </td>
                    <td className="num">v{workflow.version}</td>
                    <td>
                      <RelativeTime value={workflow.updated_at ?? workflow.created_at} />
                    </td>
                    <td className="actions" onClick={(event) => event.stopPropagation()}>
                      <a className="button small primary-outline" href={`#/workflows/${workflow.id}/run`} data-testid={`run-${workflow.id}`}>
                        ▶ Run
                      </a>
                      <a
                        className="button small"
                        href={`#/executions?workflow_id=${encodeURIComponent(workflow.id)}`}
                        data-testid={`executions-${workflow.id}`}
                      >
                        Executions
                      </a>
                      <ConfirmDelete
                        what={`“${workflow.name}”`}
                        testId={`delete-${workflow.id}`}
                        onConfirm={() => remove(workflow)}
                      />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Pager page={page} pageSize={PAGE_SIZE} total={data.total} onPage={goToPage} />
        </>
      )}
    </div>
  );
}

function goToPage(page: number) {
  navigateWithQuery("/workflows", { page });
}
