export function EditorPage({ workflowId }: { workflowId: string | null }) {
  return <div>Editor for {workflowId ?? "a new workflow"}</div>;
}
