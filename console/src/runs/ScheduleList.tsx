export function ScheduleList() {
  return <div>ScheduleList</div>;
}
