// Not in the article: the seed's signed-in page for bench/run.py's side-by-side round
// (bench/seed.py copies this file into its build of ../shared/peers/seed-nextjs). A server
// component that calls auth(), as the article's pages would, and shows who is signed in.
// The article's callbacks copy no roles into the session, so `roles` is empty here.
import {auth} from "@/auth"
import {redirect} from "next/navigation"

export const dynamic = 'force-dynamic'

export default async function Page() {
    const session = await auth()
    if (!session?.user) {
        redirect('/')
    }
    const user = session.user as { name?: string, email?: string, roles?: string[] }
    return (
        <main>
            <h1>Signed in as {user.name}</h1>
            <p>{user.email}</p>
            <p>Roles: {(user.roles ?? []).join(', ')}</p>
        </main>
    )
}
