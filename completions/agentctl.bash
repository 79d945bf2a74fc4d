# bash completion for agentctl(1).
# Commands, their subcommands and options come from `agentctl --help`, which is
# generated from agentd's method table, so they follow the installed agentctl;
# sandbox ids come from `agentctl ps`, task names from `agentctl tasks`.

# Prints the usage part of each command line of `agentctl --help` (the summary
# that follows starts with a capitalised word or a parenthesis).
_agentctl_usage() {
        "$@" --help 2>/dev/null | awk '/^  [a-z]/ {
                u = ""
                for (i = 1; i <= NF; i++) {
                        if ($i ~ /^[A-Z][a-z]/ || $i ~ /^\(/) break
                        u = u " " $i
                }
                print substr(u, 2)
        }'
}

# For the usage lines of one command ($1, and $2 the subcommand if any) prints
# "opts: ...", "argopts: ..." (options taking a value) and "pos: ..." (placeholders).
_agentctl_shape() {
        awk -v cmd="$1" -v sc="$2" '
        $1 != cmd { next }
        sc != "" && $2 != sc { next }
        {
                start = (sc != "") ? 3 : 2
                for (i = start; i <= NF; i++) {
                        t = $i; gsub(/[][|]/, "", t)
                        if (t == "" || t == "--") continue
                        if (t ~ /^-/) {
                                opts = opts " " t
                                n = $(i + 1); gsub(/[][|]/, "", n)
                                if (n ~ /^[A-Z]/) { argopts = argopts " " t; i++ }
                        } else if (t ~ /^[A-Z]/) {
                                pos = pos " " t
                        }
                }
        }
        END { print "opts:" opts; print "argopts:" argopts; print "pos:" pos }'
}

_agentctl_ids() {
        "$@" ps 2>/dev/null | awk 'NR > 1 { print $1 }'
}

_agentctl_tasks() {
        "$@" tasks 2>/dev/null | awk 'NR > 1 { print $1 }'
}

_agentctl() {
        local cur prev
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=""
        [ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD - 1]}
        local -a ctl=("${COMP_WORDS[0]}")
        local i w cmd="" sub="" dashdash=0 npos=0 skip=0 after_dd=0

        local usage
        # Global options first: --socket PATH applies to the lookups too.
        for ((i = 1; i < COMP_CWORD; i++)); do
                [ "${COMP_WORDS[i]}" = --socket ] && ctl+=(--socket "${COMP_WORDS[i + 1]}")
        done
        usage=$(_agentctl_usage "${ctl[@]}")

        local subs shape opts="" argopts="" pos=""
        for ((i = 1; i < COMP_CWORD; i++)); do
                w=${COMP_WORDS[i]}
                if [ "$skip" = 1 ]; then skip=0; continue; fi
                if [ "$dashdash" = 1 ]; then after_dd=$((after_dd + 1)); continue; fi
                if [ -z "$cmd" ]; then
                        case $w in
                        --socket) skip=1 ;;
                        -*) ;;
                        *) cmd=$w
                           subs=$(awk -v c="$cmd" '$1 == c && $2 ~ /^[a-z]/ { print $2 }' <<<"$usage") ;;
                        esac
                        continue
                fi
                if [ -n "$subs" ] && [ -z "$sub" ] && [[ $w != -* ]]; then
                        sub=$w
                        continue
                fi
                if [ -z "$shape" ]; then
                        shape=$(_agentctl_shape "$cmd" "$sub" <<<"$usage")
                        argopts=$(sed -n 's/^argopts://p' <<<"$shape")
                fi
                case $w in
                --) dashdash=1 ;;
                -*) [[ " $argopts " == *" $w "* ]] && skip=1 ;;
                *) npos=$((npos + 1)) ;;
                esac
        done

        COMPREPLY=()
        if [ -z "$cmd" ]; then
                if [ "$prev" = --socket ]; then
                        COMPREPLY=($(compgen -f -- "$cur"))
                        return 0
                fi
                COMPREPLY=($(compgen -W "$(awk '{ print $1 }' <<<"$usage" | sort -u) --socket --json --help" -- "$cur"))
                return 0
        fi
        if [ "$dashdash" = 1 ]; then
                if [ "$after_dd" = 0 ]; then
                        COMPREPLY=($(compgen -c -- "$cur"))
                else
                        COMPREPLY=($(compgen -f -- "$cur"))
                fi
                return 0
        fi
        if [ -n "$subs" ] && [ -z "$sub" ]; then
                COMPREPLY=($(compgen -W "$subs" -- "$cur"))
                return 0
        fi
        [ -n "$shape" ] || shape=$(_agentctl_shape "$cmd" "$sub" <<<"$usage")
        opts=$(sed -n 's/^opts://p' <<<"$shape")
        pos=$(sed -n 's/^pos://p' <<<"$shape")
        case $prev in
        --task) COMPREPLY=($(compgen -W "$(_agentctl_tasks "${ctl[@]}")" -- "$cur")); return 0 ;;
        --sandbox) COMPREPLY=($(compgen -W "$(_agentctl_ids "${ctl[@]}")" -- "$cur")); return 0 ;;
        --workspace) COMPREPLY=($(compgen -d -- "$cur")); return 0 ;;
        --signal) COMPREPLY=($(compgen -W "TERM KILL INT HUP QUIT USR1 USR2 STOP CONT" -- "$cur")); return 0 ;;
        -o | --*-file) COMPREPLY=($(compgen -f -- "$cur")); return 0 ;;
        esac
        if [[ $prev == -* ]] && [[ " $argopts " == *" $prev "* ]]; then
                return 0 # a value nobody can guess (--role-id, --limit)
        fi
        if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "$opts" -- "$cur"))
                return 0
        fi
        local -a p=($pos)
        local want=${p[npos]:-}
        if [ -z "$want" ] && [ ${#p[@]} -gt 0 ] && [[ ${p[${#p[@]} - 1]} == *... ]]; then
                want=${p[${#p[@]} - 1]} # PATH...: any number
        fi
        case $want in
        ID) COMPREPLY=($(compgen -W "$(_agentctl_ids "${ctl[@]}")" -- "$cur")) ;;
        NAME) COMPREPLY=($(compgen -W "$(_agentctl_tasks "${ctl[@]}")" -- "$cur")) ;;
        PATH* | FILE* | DIR*) COMPREPLY=($(compgen -f -- "$cur")) ;;
        esac
        return 0
}

complete -F _agentctl agentctl
